package apiserver

import (
	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/internal/model"
)

// NewWithClient is New with a given client, for harnesses outside this package that
// drive the real informers, transforms and handlers without an API server
// (bench/memory measures the informer cache with a fake clientset). host only names
// the server in log lines.
func NewWithClient(opts Options, client kubernetes.Interface, host string, h model.Handler) *Source {
	return newWithClient(opts, client, host, h)
}
