package memory

import (
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The benchmark's objects as the API server hands them to a list: objects() plus what
// the server adds (uid, resourceVersion, creationTimestamp, generation, managedFields,
// the defaulted spec fields and endpoint conditions), so that what the informers
// decode, transform and cache is what kproxy caches in bench/run.sh. The managed
// fields are those of an object created by a client (bench/scale's).
var (
	serviceFields = (`{"f:spec":{"f:internalTrafficPolicy":{},"f:ports":{".":{},"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:name":{},"f:port":{},"f:protocol":{},"f:targetPort":{}}},"f:sessionAffinity":{},"f:type":{}}}`)
	sliceFields   = (`{"f:addressType":{},"f:endpoints":{},"f:metadata":{"f:labels":{".":{},"f:endpointslice.kubernetes.io/managed-by":{},"f:kubernetes.io/service-name":{}}},"f:ports":{}}`)
	created       = metav1.NewTime(time.Date(2026, 12, 5, 7, 0, 0, 0, time.UTC))
)

// apiObjects returns Service i and its EndpointSlice, m endpoints, as listed.
func apiObjects(i, m int) (*v1.Service, *discovery.EndpointSlice) {
	svc, slice := objects(i, m)
	meta := func(o *metav1.ObjectMeta, kind string, rv int, fields string) {
		o.UID = types.UID(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, rv))
		o.ResourceVersion = fmt.Sprint(rv)
		o.CreationTimestamp = created
		o.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "scale.test", Operation: metav1.ManagedFieldsOperationUpdate,
			APIVersion: kind, Time: &created, FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(fields)}}
	}
	meta(&svc.ObjectMeta, "v1", 1000+2*i, serviceFields)
	single, cluster, none := v1.IPFamilyPolicySingleStack, v1.ServiceInternalTrafficPolicyCluster, v1.ServiceAffinityNone
	svc.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol}
	svc.Spec.IPFamilyPolicy = &single
	svc.Spec.InternalTrafficPolicy = &cluster
	svc.Spec.SessionAffinity = none

	meta(&slice.ObjectMeta, "discovery.k8s.io/v1", 1001+2*i, sliceFields)
	slice.Generation = 1
	slice.Labels[discovery.LabelManagedBy] = "kproxy-bench"
	for e := range slice.Endpoints {
		// A decoder allocates every pointer and string of every endpoint.
		yes, no, node := true, false, strings.Clone(*slice.Endpoints[e].NodeName)
		c := &slice.Endpoints[e].Conditions
		c.Ready, c.Serving, c.Terminating = &yes, &yes, &no
		slice.Endpoints[e].NodeName = &node
	}
	return svc, slice
}
