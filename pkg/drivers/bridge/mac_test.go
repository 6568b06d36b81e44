package bridge

import (
	"fmt"
	"testing"
)

func TestBridgeMACIsStableLocalUnicastAndNotAnEndpointMAC(t *testing.T) {
	seen := map[string]string{}
	for i := range 2000 {
		nid := fmt.Sprintf("%032x", i)
		mac := bridgeMAC(nid)
		if got := bridgeMAC(nid); got.String() != mac.String() {
			t.Fatalf("bridgeMAC(%s) is %s, then %s", nid, mac, got)
		}
		if len(mac) != 6 || mac[0]&0x01 != 0 || mac[0]&0x02 == 0 {
			t.Fatalf("bridgeMAC(%s) = %s: not a locally administered unicast MAC", nid, mac)
		}
		if mac[0] == 0x02 && mac[1] == 0x42 {
			t.Fatalf("bridgeMAC(%s) = %s: in the endpoints' 02:42 range", nid, mac)
		}
		if other, ok := seen[mac.String()]; ok {
			t.Fatalf("networks %s and %s get the same bridge MAC %s", other, nid, mac)
		}
		seen[mac.String()] = nid
	}
}
