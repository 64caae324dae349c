//go:build qa

package raidinterop

import (
	"strings"
	"testing"
)

// TestParseGuest pins the line formats the guest script emits (no guest needed).
func TestParseGuest(t *testing.T) {
	out := strings.Join([]string{
		"STEP assemble 21.20",
		"ASSEMBLE-RC 0",
		"ASSEMBLE-OUT mdadm: /dev/md/ours-r5-3 has been started with 3 drives.",
		"RUN md126 0",
		"MD md127 0a1b2c3d:00000000:11111111:22222222 raid5 3 0 clean idle none 132120576",
		"DETAIL md127 /dev/md127:",
		"DETAIL md127            Version : 1.2",
		"some kernel line",
		"HASH md127 " + strings.Repeat("ab", 32),
		"MISMATCH md127 0 check",
		"NOCHECK md125 resync",
		"TIMEOUT check md124",
		"GCREATED 200 0",
		"GCREATE-OUT 200 mdadm: array /dev/md200 started.",
		"GHASH 200 " + strings.Repeat("cd", 32) + " 130023424 0 33333333:44444444:55555555:66666666",
		"GDETAIL 200 /dev/md200:",
		"VD vdc h3m0",
		"VD vdd h3m1",
		"RDEV assembled md126 vdc 0 2048 spare",
		"RDEV start md126 vdc 0 2048 spare",
		"RDEV start md126 vdd 1 none in_sync",
		"RDEV end md126 vdc 0 none",
		"RECOVER md126 recover 1 2048 / 129024",
		"RECOVER md125 idle 0 none",
		"RECOVERED md126 0 idle recover 0 60.25 71.75",
		"RDETAIL start md126 /dev/md126:",
		"RDETAIL end md126 /dev/md126:",
		"RDETAIL end md126     Version : 1.2",
		"STEP done 113.47",
	}, "\n")
	r, err := parseGuest(out)
	if err != nil {
		t.Fatal(err)
	}
	st := r.md["0a1b2c3d:00000000:11111111:22222222"]
	if st != (mdState{dev: "md127", level: "raid5", raidDisks: 3, degraded: 0, arrayState: "clean", syncAction: "idle",
		resyncStart: "none", size: 132120576}) {
		t.Errorf("MD: %+v", st)
	}
	if r.assembleRC != 0 || len(r.assembleOut) != 1 || r.run["md126"] != 0 || len(r.detail["md127"]) != 2 ||
		r.hash["md127"] != strings.Repeat("ab", 32) || r.mismatch["md127"] != "0" || r.lastSync["md127"] != "check" ||
		r.noCheck["md125"] != "resync" || len(r.timeouts) != 1 {
		t.Errorf("our arrays: %+v", r)
	}
	if r.created["200"] != 0 || len(r.createdOut["200"]) != 1 || r.stockHash["200"] != strings.Repeat("cd", 32) ||
		r.stockSize["200"] != 130023424 || r.stockDDRC["200"] != 0 || r.stockUUID["200"] != "33333333:44444444:55555555:66666666" ||
		len(r.stockDetail["200"]) != 1 {
		t.Errorf("stock arrays: %+v", r)
	}
	if r.vd["h3m1"] != "vdd" || len(r.rdevs["assembled"]["md126"]) != 1 || len(r.rdevs["end"]["md126"]) != 1 ||
		r.rdevs["start"]["md126"][1] != (rdevState{disk: "vdd", serial: "h3m1", slot: "1", recoveryStart: "none", state: "in_sync"}) ||
		r.rdevs["end"]["md126"][0] != (rdevState{disk: "vdc", serial: "h3m0", slot: "0", recoveryStart: "none"}) ||
		r.recover["md126"] != (recoverState{action: "recover", degraded: 1, completed: "2048 / 129024"}) || r.recover["md125"].completed != "none" ||
		r.recovered["md126"] != (recoveredState{waitRC: 0, action: "idle", last: "recover", degraded: 0, seconds: 11.5}) ||
		len(r.rdetail["start"]["md126"]) != 1 || len(r.rdetail["end"]["md126"]) != 2 {
		t.Errorf("recoveries: %+v", r)
	}
	if strings.Join(r.steps, ",") != "assemble,done" {
		t.Errorf("steps %v", r.steps)
	}
	if _, err := parseGuest("MD md1 too few fields"); err == nil {
		t.Error("a short MD line parsed")
	}
	if got := mdadmUUID([16]byte{0xa9, 0x2b, 0x4e, 0xfc, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}); got != "a92b4efc:01020304:05060708:090a0b0c" {
		t.Errorf("mdadmUUID: %s", got)
	}
}
