//go:build qa

package array

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"opensan/gateway/block"
	"opensan/raid/md"
)

// TestMdadmExamine writes arrays of every level with this engine on plain files and checks that stock
// mdadm --examine reads each member as we meant it: level, layout, chunk, a clean state, a correct
// checksum, the member's role and the array state. mdadm must be installed (build.sh installs it).
func TestMdadmExamine(t *testing.T) {
	mdadm, err := exec.LookPath("mdadm")
	if err != nil {
		t.Fatal("mdadm not installed: apt-get install mdadm")
	}
	for _, tc := range []struct {
		level, n int
		layout   string
	}{
		{md.LevelRAID0, 2, ""}, {md.LevelRAID1, 2, ""}, {md.LevelRAID10, 3, "near=2"},
		{md.LevelRAID5, 3, "left-symmetric"}, {md.LevelRAID6, 4, "left-symmetric"},
	} {
		for _, bitmap := range []bool{false, true} {
			if bitmap && tc.level == md.LevelRAID0 {
				continue
			}
			for _, bs := range []int{512, 4096} {
				name := fmt.Sprintf("raid%d-n%d-bitmap%v-bs%d", tc.level, tc.n, bitmap, bs)
				t.Run(name, func(t *testing.T) {
					dir := t.TempDir()
					paths := make([]string, tc.n)
					devs := make([]block.Device, tc.n)
					for i := range paths {
						paths[i] = filepath.Join(dir, fmt.Sprintf("m%d", i))
						if err := os.WriteFile(paths[i], nil, 0o644); err != nil {
							t.Fatal(err)
						}
						if err := os.Truncate(paths[i], 32<<20); err != nil {
							t.Fatal(err)
						}
						f, err := block.OpenFile(paths[i], block.FileOptions{LogicalBlockSize: bs})
						if err != nil {
							t.Fatal(err)
						}
						defer f.Close()
						devs[i] = f
					}
					a, err := Create(devs, CreateConfig{Level: tc.level, Name: "qa:" + name[:min(len(name), 28)], Bitmap: bitmap})
					if err != nil {
						t.Fatal(err)
					}
					a.WaitSync()
					if _, err := a.WriteAt(make([]byte, 1<<20), 0); err != nil {
						t.Fatal(err)
					}
					if err := a.Close(); err != nil {
						t.Fatal(err)
					}
					uuid := a.UUID()
					wantUUID := fmt.Sprintf("%x:%x:%x:%x", uuid[0:4], uuid[4:8], uuid[8:12], uuid[12:16])
					for i, p := range paths {
						out, err := exec.Command(mdadm, "--examine", p).CombinedOutput()
						if err != nil {
							t.Fatalf("mdadm --examine %s: %v\n%s", p, err, out)
						}
						s := string(out)
						want := []string{
							`Version : 1\.2`,
							fmt.Sprintf(`Raid Level : raid%d\n`, tc.level),
							fmt.Sprintf(`Raid Devices : %d\n`, tc.n),
							`Array UUID : ` + wantUUID,
							`State : clean\n`,
							`Checksum : [0-9a-f]+ - correct`,
							fmt.Sprintf(`Device Role : Active device %d\n`, i),
							`Array State : ` + strings.Repeat("A", tc.n) + ` `,
							`Data Offset : 2048 sectors`,
						}
						if tc.layout != "" {
							want = append(want, `Layout : `+tc.layout+`\n`)
						}
						if tc.level != md.LevelRAID1 {
							want = append(want, `Chunk Size : 512K\n`)
						}
						if bitmap {
							want = append(want, `Internal Bitmap : 8 sectors from superblock`)
						}
						for _, w := range want {
							if !regexp.MustCompile(w).MatchString(s) {
								t.Errorf("member %d: mdadm --examine lacks %q:\n%s", i, w, s)
							}
						}
					}
					out, err := exec.Command(mdadm, append([]string{"--examine", "--scan"}, paths...)...).CombinedOutput()
					if err != nil || strings.Count(string(out), "ARRAY ") != 1 || !strings.Contains(string(out), "UUID="+wantUUID) {
						t.Errorf("mdadm --examine --scan: %v\n%s", err, out)
					}
				})
			}
		}
	}
}

// TestMdadmExamineDegraded: after a member fails, mdadm reads the survivors as one array with that slot
// missing, and the survivors agree on events.
func TestMdadmExamineDegraded(t *testing.T) {
	mdadm, err := exec.LookPath("mdadm")
	if err != nil {
		t.Fatal("mdadm not installed: apt-get install mdadm")
	}
	paths, devs := memberFiles(t, 4, 32<<20)
	a, err := Create(devs, CreateConfig{Level: md.LevelRAID6, Name: "qa:degraded", Bitmap: true})
	if err != nil {
		t.Fatal(err)
	}
	a.WaitSync()
	a.meta.Lock()
	a.slot(2).faulty.Store(true)
	if err := a.failedLocked(nil); err != nil {
		t.Fatal(err)
	}
	a.meta.Unlock()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	events := ""
	for _, i := range []int{0, 1, 3} {
		out, err := exec.Command(mdadm, "--examine", paths[i]).CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		s := string(out)
		if !strings.Contains(s, "Array State : AA.A ") || !regexp.MustCompile(`Checksum : [0-9a-f]+ - correct`).MatchString(s) {
			t.Errorf("member %d:\n%s", i, s)
		}
		e := regexp.MustCompile(`Events : (\d+)`).FindStringSubmatch(s)
		if e == nil || (events != "" && e[1] != events) {
			t.Errorf("member %d events %v, others %s", i, e, events)
		} else {
			events = e[1]
		}
	}
}

// TestMdadmExamineBitmap reads our internal bitmap with stock mdadm (-X needs a block device: a loop
// device over the member file): a clean array shows no dirty bit and the superblock's events; a running
// array with one write in flight region shows that one bit, and the superblock says active.
func TestMdadmExamineBitmap(t *testing.T) {
	mdadm, err := exec.LookPath("mdadm")
	if err != nil {
		t.Fatal("mdadm not installed: apt-get install mdadm")
	}
	paths, devs := memberFiles(t, 3, 64<<20)
	loop := func(p string) string {
		out, err := exec.Command("losetup", "-f", "--show", "-r", p).CombinedOutput()
		if err != nil {
			t.Fatalf("losetup: %v %s", err, out)
		}
		dev := strings.TrimSpace(string(out))
		t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
		return dev
	}
	examine := func(args ...string) string {
		out, err := exec.Command(mdadm, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("mdadm %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	a, err := Create(devs, CreateConfig{Level: md.LevelRAID5, Name: "qa:bitmap", Bitmap: true, BitmapChunk: 4 << 20, BitmapDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a.WaitSync()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	l := loop(paths[1])
	x := examine("-X", l)
	events := regexp.MustCompile(`Events : (\d+)`).FindStringSubmatch(examine("--examine", l))
	for _, w := range []string{`Magic : 6d746962`, `Version : 4`, `Chunksize : 4 MB`, `Bitmap : 16 bits \(chunks\), 0 dirty`,
		`Events : ` + events[1] + `\n`, `State : OK`} {
		if !regexp.MustCompile(w).MatchString(x) {
			t.Errorf("mdadm -X lacks %q:\n%s", w, x)
		}
	}
	exec.Command("losetup", "-d", l).Run()

	b, err := Assemble(devs, AssembleConfig{BitmapDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.WriteAt(make([]byte, 4096), 9<<20); err != nil { // member byte 4.5 MiB: bit 1
		t.Fatal(err)
	}
	l = loop(paths[1])
	x = examine("-X", l)
	if !regexp.MustCompile(`Bitmap : 16 bits \(chunks\), 1 dirty`).MatchString(x) {
		t.Errorf("mdadm -X after one write:\n%s", x)
	}
	if e := examine("--examine", l); !strings.Contains(e, "State : active") {
		t.Errorf("running array not active:\n%s", e)
	}
}

// TestMdadmExamineSpareAndRecovery: mdadm reads a hot spare's superblock as a spare, and a member whose
// rebuild was interrupted as active in its slot with the recovery offset we recorded.
func TestMdadmExamineSpareAndRecovery(t *testing.T) {
	mdadm, err := exec.LookPath("mdadm")
	if err != nil {
		t.Fatal("mdadm not installed: apt-get install mdadm")
	}
	paths, devs := memberFiles(t, 5, 40<<20)
	// RAID5 of 3 with a spare; the fifth file is added later as a replacement.
	a, err := Create(devs[:4], CreateConfig{Level: md.LevelRAID5, Name: "qa:spare", Spares: 1, Bitmap: true})
	if err != nil {
		t.Fatal(err)
	}
	a.WaitSync()
	examine := func(p string) string {
		out, err := exec.Command(mdadm, "--examine", p).CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !regexp.MustCompile(`Checksum : [0-9a-f]+ - correct`).Match(out) {
			t.Errorf("%s: checksum not correct:\n%s", p, out)
		}
		return string(out)
	}
	if s := examine(paths[3]); !strings.Contains(s, "Device Role : spare") {
		t.Errorf("spare:\n%s", s)
	}
	// Slot 1 fails; the spare takes it and is rebuilt slowly enough to be interrupted.
	a.SetSyncRate(SyncRate{Min: 4 << 20, Max: 4 << 20})
	a.fail(a.slot(1), fmt.Errorf("test: member 1 pulled"))
	deadline := time.Now().Add(20 * time.Second)
	for a.Status().Done < 2<<20 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	s := examine(paths[3])
	m := regexp.MustCompile(`Recovery Offset : (\d+) sectors`).FindStringSubmatch(s)
	if !strings.Contains(s, "Device Role : Active device 1") || m == nil || m[1] == "0" {
		t.Errorf("member being rebuilt:\n%s", s)
	}
	if s := examine(paths[0]); !strings.Contains(s, "Array State : AAA ") {
		t.Errorf("survivor (mdadm shows a recovering member as active):\n%s", s)
	}
}

// memberFiles makes n sparse member files of size bytes in a test directory and opens them; they are
// closed when the test ends.
func memberFiles(t *testing.T, n int, size int64) (paths []string, devs []block.Device) {
	t.Helper()
	dir := t.TempDir()
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("m%d", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		f, err := block.OpenFile(p, block.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		paths, devs = append(paths, p), append(devs, f)
	}
	return paths, devs
}
