package cluster

import (
	"slices"
	"testing"
)

// Teardown deletes kube-proxy's and the kubelet's jumps by repeating their
// rules with -D, so a rule must split into exactly the arguments
// iptables-save printed, a quoted comment kept whole.
func TestSplitRule(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
	}{
		{`-A INPUT -m comment --comment "kubernetes externally-visible service portals" -m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES`,
			[]string{"-A", "INPUT", "-m", "comment", "--comment", "kubernetes externally-visible service portals",
				"-m", "conntrack", "--ctstate", "NEW", "-j", "KUBE-EXTERNAL-SERVICES"}},
		{`-A FORWARD -j JETSINK-FORWARD`, []string{"-A", "FORWARD", "-j", "JETSINK-FORWARD"}},
		{`-A OUTPUT -m comment --comment "" -j KUBE-X`, []string{"-A", "OUTPUT", "-m", "comment", "--comment", "", "-j", "KUBE-X"}},
	} {
		if got := splitRule(tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("splitRule(%s)\n got %q\nwant %q", tc.line, got, tc.want)
		}
	}
}

func TestOurs(t *testing.T) {
	for chain, want := range map[string]bool{"KUBE-SERVICES": true, "KUBE-FIREWALL": true, "JETSINK-FORWARD": true,
		"FORWARD": false, "DOCKER": false, "CNI-abc": false} {
		if ours(chain) != want {
			t.Errorf("ours(%s) = %v, want %v", chain, !want, want)
		}
	}
}
