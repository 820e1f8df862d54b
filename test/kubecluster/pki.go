package kubecluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kproxy/kproxy/test/testpki"
)

// pki is the cluster's credentials, made fresh for every cluster: a CA, the API
// server's serving certificate, the service-account signing key, and a bearer token
// per identity (the admin in system:masters, each kubelet as system:node:<name>).
type pki struct {
	dir                       string
	caPEM                     []byte
	caFile, certFile, keyFile string
	saKeyFile, saPubFile      string
	tokenFile                 string
	tokens                    map[string]string // identity -> token
}

func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{
		dir:    dir,
		caFile: filepath.Join(dir, "ca.crt"), certFile: filepath.Join(dir, "apiserver.crt"), keyFile: filepath.Join(dir, "apiserver.key"),
		saKeyFile: filepath.Join(dir, "sa.key"), saPubFile: filepath.Join(dir, "sa.pub"), tokenFile: filepath.Join(dir, "tokens.csv"),
		tokens: map[string]string{},
	}
	set, err := testpki.New("kproxy-cluster-ca", []net.IP{net.ParseIP(CPIP), net.ParseIP("10.96.0.1"), net.ParseIP("127.0.0.1")}, 7*24*time.Hour)
	if err != nil {
		return nil, err
	}
	p.caPEM = set.CA
	// token,user,uid,"group1,group2"
	var tokens strings.Builder
	add := func(user, groups string) error {
		tok, err := testpki.Token()
		if err != nil {
			return err
		}
		p.tokens[user] = tok
		fmt.Fprintf(&tokens, "%s,%s,%s,%q\n", p.tokens[user], user, user, groups)
		return nil
	}
	if err := add("admin", "system:masters"); err != nil {
		return nil, err
	}
	for _, n := range Nodes {
		if err := add("system:node:"+n.Name, "system:nodes"); err != nil {
			return nil, err
		}
	}
	files := map[string][]byte{
		p.caFile: set.CA, p.certFile: set.Cert, p.keyFile: set.Key,
		p.saKeyFile: set.SAKey, p.saPubFile: set.SAPublic,
		p.tokenFile: []byte(tokens.String()),
	}
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// writeKubeconfig writes a kubeconfig for identity user at path.
func (p *pki) writeKubeconfig(path, user string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cluster"] = &clientcmdapi.Cluster{Server: fmt.Sprintf("https://%s:%d", CPIP, apiPort), CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{Token: p.tokens[user]}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: "user"}
	cfg.CurrentContext = "default"
	return clientcmd.WriteToFile(*cfg, path)
}
