package apiserver

import (
	"context"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestStartStopRestart starts a real server, writes an object, restarts the
// kube-apiserver and reads the object back: etcd kept it and the port is the same.
func TestStartStopRestart(t *testing.T) {
	bin := RequireBinaries(t)
	s, err := Start(Options{BinDir: bin, Log: t})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("kube-apiserver log tail:\n%s", s.APIServerLog(40))
			s.CloseKeepLogs()
			return
		}
		s.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}
	if _, err := s.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	// The kube-apiserver's bootstrap controller creates the kubernetes Service
	// shortly after /readyz first answers ok, not before: poll for it.
	var svc *v1.Service
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		svc, err = s.Client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("the kubernetes Service, a minute after the server was ready: %v", err)
	}
	if svc.Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("kubernetes Service ClusterIP %s, want 10.96.0.1 (first of %s)", svc.Spec.ClusterIP, ServiceCIDR)
	}
	url := s.URL
	s.Stop()
	if s.Running() {
		t.Fatal("kube-apiserver still running after Stop")
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	_, err = s.Client.CoreV1().Namespaces().Get(short, "probe", metav1.GetOptions{})
	cancelShort()
	if err == nil {
		t.Fatal("GET succeeded while the kube-apiserver was stopped")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.URL != url {
		t.Errorf("URL changed across Restart: %s -> %s", url, s.URL)
	}
	if _, err := s.Client.CoreV1().Namespaces().Get(ctx, "probe", metav1.GetOptions{}); err != nil {
		t.Errorf("namespace written before the restart: %v", err)
	}
}
