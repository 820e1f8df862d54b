package apiserver

import (
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/kproxy/kproxy/test/testpki"
)

// credentials are the files a kube-apiserver needs, generated fresh for every Start:
// nothing secret is checked into the repo and nothing outlives the test.
type credentials struct {
	caPEM      []byte
	caFile     string // CA that signed the serving certificate (for kubeconfigs)
	certFile   string // serving certificate and key
	keyFile    string
	saKeyFile  string // service-account token signing key (private)
	saPubFile  string // and its public half, for verifying
	tokenFile  string // --token-auth-file
	adminToken string // bearer token of "admin" in group system:masters
}

func generateCredentials(dir string, ips []net.IP) (*credentials, error) {
	c := &credentials{
		caFile:    filepath.Join(dir, "ca.crt"),
		certFile:  filepath.Join(dir, "apiserver.crt"),
		keyFile:   filepath.Join(dir, "apiserver.key"),
		saKeyFile: filepath.Join(dir, "sa.key"),
		saPubFile: filepath.Join(dir, "sa.pub"),
		tokenFile: filepath.Join(dir, "tokens.csv"),
	}
	set, err := testpki.New("kproxy-test-ca", ips, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	c.caPEM = set.CA
	if c.adminToken, err = testpki.Token(); err != nil {
		return nil, err
	}
	files := map[string][]byte{
		c.caFile:    set.CA,
		c.certFile:  set.Cert,
		c.keyFile:   set.Key,
		c.saKeyFile: set.SAKey,
		c.saPubFile: set.SAPublic,
		// token,user,uid,"group1,group2"
		c.tokenFile: []byte(c.adminToken + `,admin,admin,"system:masters"` + "\n"),
	}
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return c, nil
}
