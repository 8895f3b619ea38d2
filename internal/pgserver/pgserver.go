// Package pgserver prepares a PostgreSQL server from Debian's postgresql
// package (`make test-deps` installs it), for the Iceberg SQL catalog of
// the tests, the fault matrix and the local stack: a fresh cluster with
// trust authentication in a directory of its own. PostgreSQL refuses to
// run as root, so as root everything runs as the package's postgres user,
// who owns that directory.
//
//	Init ──> Cluster{Dir, Data, Cred} ──> Command("initdb"|"postgres"|"pg_isready", …)
//	                                  └─> ServerArgs(host, port): the postgres server's flags
package pgserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// Cluster is an initialised PostgreSQL data directory.
type Cluster struct {
	// BinDir holds postgres, initdb and pg_isready.
	BinDir string
	// Dir is the cluster's own directory (also its socket directory);
	// Data the data directory inside it.
	Dir, Data string
	// Cred is the postgres user's, nil when not root.
	Cred *syscall.Credential
}

// Init makes a new cluster in a new temporary directory named after
// prefix, with superuser postgres and trust authentication.
func Init(prefix string) (*Cluster, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		return nil, errors.New("pgserver: no PostgreSQL in /usr/lib/postgresql/*/bin: apt-get install -y postgresql (make test-deps)")
	}
	c := &Cluster{BinDir: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	c.Dir, c.Data = dir, filepath.Join(dir, "data")
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			c.Remove()
			return nil, fmt.Errorf("pgserver: PostgreSQL as root needs the postgres user of the postgresql package: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.Cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			c.Remove()
			return nil, err
		}
	}
	if out, err := c.Command("initdb", "-D", c.Data, "-U", "postgres", "-A", "trust", "--no-sync").CombinedOutput(); err != nil {
		c.Remove()
		return nil, fmt.Errorf("pgserver: initdb: %v\n%s", err, out)
	}
	return c, nil
}

// Command runs one of the package's programs as the cluster's user, in
// its directory.
func (c *Cluster) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.BinDir, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.Cred}
	cmd.Dir = c.Dir
	return cmd
}

// ServerArgs are the postgres server's arguments to listen on host:port
// only. fsync is off: these clusters hold test data, and an outage test
// stops the server, not the machine.
func (c *Cluster) ServerArgs(host string, port int) []string {
	return []string{"-D", c.Data, "-p", strconv.Itoa(port), "-c", "listen_addresses=" + host,
		"-c", "unix_socket_directories=" + c.Dir, "-c", "fsync=off", "-c", "max_connections=200"}
}

// Ready says whether the server on host:port accepts connections:
// pg_isready asks the server itself, where a TCP connect alone cannot tell
// a listening server from one starting up.
func (c *Cluster) Ready(host string, port int) bool {
	return c.Command("pg_isready", "-q", "-h", host, "-p", strconv.Itoa(port)).Run() == nil
}

// WriteHBA replaces the cluster's pg_hba.conf (who may log in from where,
// and how), owned by the server's user. A running server reads it again
// on pg_ctl reload.
func (c *Cluster) WriteHBA(rules string) error {
	path := filepath.Join(c.Data, "pg_hba.conf")
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		return err
	}
	if c.Cred != nil {
		return os.Chown(path, int(c.Cred.Uid), int(c.Cred.Gid))
	}
	return nil
}

// Remove deletes the cluster's directory. Stop its server first.
func (c *Cluster) Remove() { os.RemoveAll(c.Dir) }
