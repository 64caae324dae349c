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
