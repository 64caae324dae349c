//go:build qa

package e2e

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"opensan/qa/harness"
)

// TestIntegrityQemuIO writes a 64 MiB pattern through QEMU's iSCSI driver and reads it back verified,
// then checks that a different pattern does not verify (so the read really compares).
func TestIntegrityQemuIO(t *testing.T) {
	harness.NeedCommand(t, "qemu-io")
	forEachKind(t, func(t *testing.T, kind harness.Kind) {
		d := target{kind: kind, files: []string{harness.SparseFile(t, 256<<20)}}.start(t)
		o := qemuIO(2*time.Minute, d, d.FirstLUN, initiatorA,
			"write -P 0xa5 0 64M", "read -P 0xa5 0 64M", "write -P 0x5a 192M 64M", "read -P 0x5a 192M 64M", "read -P 0xa5 0 64M")
		if ioFailed(o) {
			t.Fatalf("qemu-io pattern write/read: %v\n%s", o.Err, o.Combined())
		}
		bad := qemuIO(time.Minute, d, d.FirstLUN, initiatorA, "read -P 0x5a 0 64M")
		if !ioFailed(bad) {
			t.Fatalf("reading 0xa5 data back as 0x5a verified:\n%s", bad.Combined())
		}
	})
}

// TestIntegrityQemuImgConvert copies a random 64 MiB file onto a 64 MiB LUN with qemu-img convert and
// back into a new file, and compares the two byte for byte.
func TestIntegrityQemuImgConvert(t *testing.T) {
	harness.NeedCommand(t, "qemu-img")
	harness.NeedCommand(t, "cmp")
	const size = 64 << 20
	src := filepath.Join(t.TempDir(), "random.img")
	buf := make([]byte, size)
	rand.Read(buf)
	if err := os.WriteFile(src, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	forEachKind(t, func(t *testing.T, kind harness.Kind) {
		d := target{kind: kind, files: []string{harness.SparseFile(t, size)}}.start(t)
		lun := d.URL(d.FirstLUN)
		harness.MustRun(t, 3*time.Minute, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, lun)
		back := filepath.Join(t.TempDir(), "back.img")
		harness.MustRun(t, 3*time.Minute, "qemu-img", "convert", "-f", "raw", "-O", "raw", lun, back)
		if o := harness.Run(time.Minute, "cmp", src, back); o.Err != nil {
			t.Fatalf("the LUN read back differs from what was written: %s", o.Combined())
		}
	})
}
