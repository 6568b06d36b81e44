package bridge

import "testing"

func TestIsHostVethNameKnowsTheNamesVethNamesMakesAndNoOthers(t *testing.T) {
	host, peer := vethNames("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		name string
		want bool
	}{
		{host, true},
		{"veth0123456789a", true},
		{peer, false},
		{"veth0123456789", false},   // too short
		{"veth0123456789ab", false}, // too long
		{"veth0123456789A", false},  // upper case: not ours
		{"veth012345678-a", false},
		{"vETH0123456789a", false},
		{"eth0", false},
		{"", false},
	} {
		if got := isHostVethName(tc.name); got != tc.want {
			t.Errorf("isHostVethName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
