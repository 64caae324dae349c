//go:build qa

package guest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBootScriptStatus boots the bare image and checks that the script's output and exit status, and a
// per-boot file, come back, and that a virtio-blk disk's bytes are readable in the guest.
func TestBootScriptStatus(t *testing.T) {
	im := MustBuild(t, Config{})
	disk := filepath.Join(t.TempDir(), "disk.img")
	data := bytes.Repeat([]byte("opensan-guest-disk"), 1<<16) // 1.1 MiB
	data = data[:1<<20]
	if err := os.WriteFile(disk, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	r := MustRun(t, im, RunConfig{
		Files: []File{{Path: "/etc/hello", Data: []byte("hello from the host\n")}},
		Disks: []Disk{{Path: disk, Serial: "disk0"}},
		Script: `cat /etc/hello
echo "disk $(dd if=/dev/vda bs=1M count=1 2>/dev/null | sha256sum)"
ip addr show eth0 | grep -q 10.0.2.15 && echo net-ok
exit 3`,
		Timeout: 2 * time.Minute,
	})
	if r.ExitCode != 3 {
		t.Errorf("exit code %d, want 3", r.ExitCode)
	}
	for _, want := range []string{"hello from the host", fmt.Sprintf("disk %x", sum), "net-ok"} {
		if !strings.Contains(r.Output, want) {
			t.Errorf("script output lacks %q:\n%s", want, r.Output)
		}
	}
}

// TestMonitorSetLink drives QEMU's monitor while the guest runs: the script waits for eth0 to lose its
// carrier, which only "set_link n0 off" on the monitor causes.
func TestMonitorSetLink(t *testing.T) {
	im := MustBuild(t, Config{})
	m := MustStart(t, im, RunConfig{
		Script: `echo waiting-for-link-down
i=0
while [ "$(cat /sys/class/net/eth0/carrier)" = 1 ]; do i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.1; done
echo link-down`,
		Timeout: 2 * time.Minute,
	})
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(m.Console(), "waiting-for-link-down") {
		if time.Now().After(deadline) {
			t.Fatal("the guest script did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := m.Monitor("info network")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "n0") {
		t.Errorf("info network does not list n0:\n%s", out)
	}
	if _, err := m.Monitor("set_link n0 off"); err != nil {
		t.Fatal(err)
	}
	r, err := m.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if r.ExitCode != 0 || !strings.Contains(r.Output, "link-down") {
		t.Errorf("status %d, output:\n%s", r.ExitCode, r.Output)
	}
}
