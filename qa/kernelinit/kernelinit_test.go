//go:build qa

// Package kernelinit tests the target with the Linux kernel's own iSCSI initiator (open-iscsi's iscsid
// and iscsiadm, the iscsi_tcp module) in a QEMU guest: discovery, login, mkfs.ext4, file I/O, fsck,
// remount and verify, logout; the host then checks the file system on the backing file itself.
//
// Run:   go test -tags qa -v -timeout 10m ./qa/kernelinit
// The target is gatewayd; OPENSAN_KERNELINIT_TARGET=tgt runs against Debian's tgt instead (to tell a
// harness problem from a gatewayd one), "gatewayd,tgt" against both, and "external" against a target
// started by hand: OPENSAN_KERNELINIT_PORTAL=127.0.0.1:PORT, OPENSAN_KERNELINIT_IQN=IQN and
// OPENSAN_KERNELINIT_BACKING=FILE (the LUN's backing file, checked on the host afterwards; the LUN must be
// the target's only disk).
package kernelinit

import (
	"crypto/sha256"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"opensan/qa/guest"
	"opensan/qa/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// lunSize is the size of the exported disk: big enough for ext4 with a journal, small enough that mkfs
// over iSCSI in an emulated CPU takes seconds.
const lunSize = 256 << 20

// initiatorIQN is the guest's initiator name.
const initiatorIQN = "iqn.2026-11.org.opensan:guest"

// guestConfig is the image: open-iscsi and e2fsprogs with the iSCSI initiator and ext4 modules.
var guestConfig = guest.Config{
	Packages: []string{"open-iscsi", "e2fsprogs"},
	Modules:  []string{"iscsi_tcp", "crc32c", "ext4"}, // crc32c: libiscsi_tcp allocates it by name at login
	Files: []guest.File{
		{Path: "/etc/iscsi/initiatorname.iscsi", Data: []byte("InitiatorName=" + initiatorIQN + "\n")},
	},
}

// script is the guest's part. Every step echoes "STEP name" first, so a failure names its step in the
// log; set -e stops at the first failing command. The host fills in PORTAL, IQN and the file count.
const script = `set -eu
PORTAL=%s
IQN=%s
step() { echo "STEP $*"; }
fail() { echo "FAIL: $*"; dmesg | tail -40; exit 1; }

step iscsid
mkdir -p /var/lib/iscsi /run/lock/iscsi /etc/iscsi/nodes /etc/iscsi/send_targets
iscsid
i=0; until iscsiadm -m session >/dev/null 2>&1 || [ $? -eq 21 ]; do i=$((i+1)); [ $i -lt 50 ] || fail "iscsid did not start"; sleep 0.2; done

step discovery
out=$(iscsiadm -m discovery -t sendtargets -p "$PORTAL")
echo "$out"
echo "$out" | grep -q " $IQN\$" || fail "discovery did not return $IQN"
# The target reports the portal it listens on (127.0.0.1 on the host); from the guest the host is
# 10.0.2.2, so log in through a node record for the portal we used.
iscsiadm -m node -o delete >/dev/null 2>&1 || true
iscsiadm -m node -o new -T "$IQN" -p "$PORTAL" >/dev/null

step login
iscsiadm -m node -T "$IQN" -p "$PORTAL" --login
dev=
i=0
while [ -z "$dev" ]; do
	dev=$(iscsiadm -m session -P 3 | sed -n 's/.*Attached scsi disk \([a-z]*\).*/\1/p' | head -1)
	[ -n "$dev" ] && [ -b "/dev/$dev" ] || dev=
	i=$((i+1)); [ $i -lt 150 ] || fail "no disk appeared after login"
	[ -n "$dev" ] || sleep 0.2
done
echo "disk /dev/$dev: $(cat /sys/block/$dev/size) sectors, $(cat /sys/block/$dev/device/vendor) $(cat /sys/block/$dev/device/model)"

step mkfs
mkfs.ext4 -q -F -L opensan "/dev/$dev"
mkdir -p /mnt/t

step write
mount -t ext4 "/dev/$dev" /mnt/t
n=0
while [ $n -lt %d ]; do
	dd if=/dev/urandom of=/mnt/t/file$n bs=64k count=$((16 * (n + 1))) 2>/dev/null
	n=$((n+1))
done
mkdir /mnt/t/dir
echo "hello from the kernel initiator" > /mnt/t/dir/hello
(cd /mnt/t && sha256sum file* dir/hello) > /root/sums
sed 's/^/SUM /' /root/sums
sync
umount /mnt/t

step fsck
e2fsck -fn "/dev/$dev"

step verify
mount -t ext4 -o ro "/dev/$dev" /mnt/t
(cd /mnt/t && sha256sum -c /root/sums)
umount /mnt/t

step logout
iscsiadm -m node -T "$IQN" -p "$PORTAL" --logout
[ ! -b "/dev/$dev" ] || { sleep 1; [ ! -b "/dev/$dev" ] || fail "/dev/$dev still there after logout"; }
echo ALL-STEPS-PASSED
`

const files = 4

func TestKernelInitiator(t *testing.T) {
	targets := os.Getenv("OPENSAN_KERNELINIT_TARGET")
	if targets == "" {
		targets = "gatewayd"
	}
	im := guest.MustBuild(t, guestConfig)
	for _, kind := range strings.Split(targets, ",") {
		t.Run(kind, func(t *testing.T) { testKernelInitiator(t, im, harness.Kind(kind)) })
	}
}

func testKernelInitiator(t *testing.T, im *guest.Image, kind harness.Kind) {
	backing := harness.SparseFile(t, lunSize)
	var d *harness.Daemon
	switch kind {
	case "external":
		d = &harness.Daemon{Kind: kind, Addr: os.Getenv("OPENSAN_KERNELINIT_PORTAL"), IQN: os.Getenv("OPENSAN_KERNELINIT_IQN")}
		backing = os.Getenv("OPENSAN_KERNELINIT_BACKING")
		if d.Addr == "" || d.IQN == "" || backing == "" {
			t.Fatal("the external target needs OPENSAN_KERNELINIT_PORTAL, _IQN and _BACKING")
		}
	case harness.KindTgt:
		d = harness.StartTgt(t, harness.TgtOptions{Files: []string{backing}})
	case harness.KindGatewayd:
		d = harness.StartGatewayd(t, backing)
	default:
		t.Fatalf("OPENSAN_KERNELINIT_TARGET: unknown target %q (gatewayd or tgt)", kind)
	}
	_, port, _ := strings.Cut(d.Addr, ":")
	r := guest.MustRun(t, im, guest.RunConfig{
		Script:  fmt.Sprintf(script, "10.0.2.2:"+port, d.IQN, files),
		Timeout: 3 * time.Minute,
	})
	if r.ExitCode != 0 || !strings.Contains(r.Output, "ALL-STEPS-PASSED") {
		steps := regexp.MustCompile(`(?m)^STEP (.*)$`).FindAllStringSubmatch(r.Output, -1)
		last := "none"
		if len(steps) > 0 {
			last = steps[len(steps)-1][1]
		}
		t.Fatalf("guest script failed with status %d in step %q against %s", r.ExitCode, last, kind)
	}
	if kind != "external" && d.Exited() {
		t.Fatalf("%s exited during the test", kind)
	}

	// The host's view: the backing file holds a clean ext4 with the same bytes the guest wrote.
	fsck := harness.Run(time.Minute, "e2fsck", "-fn", backing)
	if fsck.Err != nil {
		t.Errorf("host e2fsck -fn of the backing file: %v\n%s", fsck.Err, fsck.Combined())
	}
	sums := regexp.MustCompile(`(?m)^SUM ([0-9a-f]{64})  (\S+)$`).FindAllStringSubmatch(r.Output, -1)
	if len(sums) != files+1 {
		t.Fatalf("guest printed %d checksums, want %d:\n%s", len(sums), files+1, r.Output)
	}
	for _, s := range sums {
		out := harness.Run(time.Minute, "debugfs", "-R", "dump /"+s[2]+" /dev/stdout", backing)
		if out.Err != nil {
			t.Errorf("debugfs dump /%s: %v\n%s", s[2], out.Err, out.Stderr)
			continue
		}
		if got := fmt.Sprintf("%x", sha256.Sum256([]byte(out.Stdout))); got != s[1] {
			t.Errorf("/%s in the backing file has sha256 %s, the guest wrote %s", s[2], got, s[1])
		}
	}
}
