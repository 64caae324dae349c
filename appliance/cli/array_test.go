package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// gatewayd runs Main in-process and returns its exit code, stdout and stderr.
func gatewayd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// memberFiles makes n sparse files of size bytes.
func memberFiles(t *testing.T, dir, prefix string, n int, size int64) []string {
	t.Helper()
	var paths []string
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("%s%d.img", prefix, i))
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// sums hashes each file, to show that a refused command wrote nothing.
func sums(t *testing.T, paths []string) []string {
	t.Helper()
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			out = append(out, "missing")
			continue
		}
		out = append(out, fmt.Sprintf("%x", sha256.Sum256(b)))
	}
	return out
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

var uuidLine = regexp.MustCompile(`(?m)^UUID: +([0-9a-f]{8}(:[0-9a-f]{8}){3})$`)

// createArray runs `gatewayd array create` and returns the UUID it printed.
func createArray(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := gatewayd(t, append([]string{"array", "create"}, args...)...)
	if code != 0 {
		t.Fatalf("array create %q exited %d:\n%s%s", args, code, out, errOut)
	}
	m := uuidLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("array create printed no UUID:\n%s", out)
	}
	return m[1]
}

// TestArrayCreateExamineCheck creates each level on 3 MiB sparse members (1 MiB of metadata, 2 MiB of
// data each), examines every member, checks the clean array, then corrupts one member's data area
// behind the engine's back and expects check to find it.
func TestArrayCreateExamineCheck(t *testing.T) {
	const member = 3 << 20
	for _, tc := range []struct {
		level   string
		n       int
		flags   []string
		name    string // set_name expected
		wantKiB int64  // array size
		layout  string
	}{
		{"raid1", 2, nil, "test:mirror", 2048, ""},
		{"5", 3, []string{"--bitmap"}, "test:parity", 4096, "left-symmetric"},
		{"raid6", 4, nil, "test:dual", 4096, "left-symmetric"},
		{"10", 3, []string{"--bitmap"}, "test:near", 3072, "near=2"}, // 96 chunks of 64 KiB over 3 members, 2 copies
		{"0", 2, nil, "test:stripe", 4096, ""},
	} {
		t.Run(tc.level, func(t *testing.T) {
			paths := memberFiles(t, t.TempDir(), "m", tc.n, member)
			args := append([]string{"--level", tc.level, "--chunk", "64K", "--name", tc.name}, tc.flags...)
			code, out, errOut := gatewayd(t, append(append([]string{"array", "create"}, args...), paths...)...)
			if code != 0 {
				t.Fatalf("create exited %d:\n%s%s", code, out, errOut)
			}
			uuid := uuidLine.FindStringSubmatch(out)[1]
			if !strings.Contains(out, fmt.Sprintf("Size:    %d bytes", tc.wantKiB<<10)) || !strings.Contains(out, "State:   clean, in sync") {
				t.Errorf("create output:\n%s", out)
			}

			code, out, errOut = gatewayd(t, append([]string{"array", "examine"}, paths...)...)
			if code != 0 {
				t.Fatalf("examine exited %d:\n%s", code, errOut)
			}
			reports := strings.Split(out, "\n"+paths[1]+":\n")
			if len(reports) != 2 || !strings.HasPrefix(out, paths[0]+":\n") {
				t.Fatalf("examine output does not start each member's report with its path:\n%s", out)
			}
			for i, p := range paths {
				start := strings.Index(out, p+":\n")
				report := out[start:]
				if i+1 < len(paths) {
					report = out[start:strings.Index(out, paths[i+1]+":\n")]
				}
				level := tc.level
				if !strings.HasPrefix(level, "raid") {
					level = "raid" + level
				}
				want := []string{
					`\n +Magic : a92b4efc\n`,
					`\n +Version : 1\.2\n`,
					`\n +Array UUID : ` + uuid + `\n`,
					`\n +Name : ` + tc.name + `\n`,
					`\n +Raid Level : ` + level + `\n`,
					fmt.Sprintf(`\n +Raid Devices : %d\n`, tc.n),
					`\n +Avail Dev Size : 4096 sectors\n`,
					fmt.Sprintf(`\n +Array Size : %d KiB\n`, tc.wantKiB),
					`\n +Data Offset : 2048 sectors\n`,
					`\n +Super Offset : 8 sectors\n`,
					`\n +State : clean\n`,
					`\n +Device UUID : [0-9a-f]{8}(:[0-9a-f]{8}){3}\n`,
					`\n +Checksum : [0-9a-f]+ - correct\n`,
					`\n +Events : \d+\n`,
					fmt.Sprintf(`\n   Device Role : Active device %d\n`, i),
					`\n   Array State : ` + strings.Repeat("A", tc.n) + ` \('A' == active`,
				}
				if tc.layout != "" {
					want = append(want, `\n +Layout : `+tc.layout+`\n`)
				}
				if level != "raid1" {
					want = append(want, `\n +Chunk Size : 64K\n`)
				}
				if len(tc.flags) > 0 {
					want = append(want, `\nInternal Bitmap : 8 sectors from superblock\n`, `\n +Bitmap Bits : \d+ bits \(chunks\), 0 dirty`,
						`\n +Bitmap State : OK\n`)
				} else if strings.Contains(report, "Bitmap") {
					t.Errorf("member %d: bitmap lines without a bitmap:\n%s", i, report)
				}
				for _, w := range want {
					if !regexp.MustCompile(w).MatchString(report) {
						t.Errorf("member %d: examine lacks %q:\n%s", i, w, report)
					}
				}
			}

			code, out, errOut = gatewayd(t, append([]string{"array", "check"}, paths...)...)
			if code != 0 || !regexp.MustCompile(`(?m)^mismatches: 0 \(`).MatchString(out) {
				t.Fatalf("check of a clean array exited %d:\n%s%s", code, out, errOut)
			}

			// 4 KiB of garbage into member 1's data area, 12 KiB in: a mirror copy, a data chunk or a parity
			// chunk of the first stripe, whichever the layout put there.
			writeAt(t, paths[1], 1<<20+12<<10, bytes.Repeat([]byte("corrupt!"), 512))
			code, out, errOut = gatewayd(t, append([]string{"array", "check"}, paths...)...)
			if tc.level == "0" {
				if code != 0 || !strings.Contains(out, "mismatches: 0") {
					t.Fatalf("raid0 check (nothing to compare) exited %d:\n%s%s", code, out, errOut)
				}
				return
			}
			if code != 1 || !regexp.MustCompile(`(?m)^mismatches: 1 \(`).MatchString(out) {
				t.Fatalf("check of a corrupted array exited %d, want 1 with one mismatch:\n%s%s", code, out, errOut)
			}
			if code, out, errOut := gatewayd(t, append([]string{"array", "check"}, paths...)...); code != 1 || !strings.Contains(out, "mismatches: 1 (") {
				t.Fatalf("check changed the data: the second check exited %d:\n%s%s", code, out, errOut)
			}
			code, out, errOut = gatewayd(t, append([]string{"array", "check", "--repair"}, paths...)...)
			if code != 1 || !strings.Contains(out, "mismatches: 1 (") || !strings.Contains(errOut, "found and repaired 1 mismatches") {
				t.Fatalf("check --repair exited %d, want 1 with one repaired mismatch:\n%s%s", code, out, errOut)
			}
			if code, out, errOut := gatewayd(t, append([]string{"array", "check"}, paths...)...); code != 0 || !strings.Contains(out, "mismatches: 0 (") {
				t.Fatalf("check after --repair exited %d, want 0:\n%s%s", code, out, errOut)
			}
			// check stops the array cleanly: the superblocks still say clean.
			if _, out, _ := gatewayd(t, "array", "examine", paths[0]); !strings.Contains(out, "State : clean\n") {
				t.Errorf("after check:\n%s", out)
			}
		})
	}
}

// TestArrayCreateName: a bare NAME is stored as HOSTNAME:NAME, as mdadm does, and examine says it is local.
func TestArrayCreateName(t *testing.T) {
	host := hostName()
	if host == "" || len(host) > 20 {
		t.Skip("no short host name")
	}
	paths := memberFiles(t, t.TempDir(), "m", 2, 2<<20)
	createArray(t, append([]string{"--level", "mirror", "--name", "vol0"}, paths...)...)
	_, out, _ := gatewayd(t, "array", "examine", paths[0])
	if !strings.Contains(out, "           Name : "+host+":vol0  (local to host "+host+")\n") {
		t.Errorf("examine:\n%s", out)
	}
}

// TestArrayCreateRefuses: bad command lines exit 2, bad members 1, and neither writes a byte.
func TestArrayCreateRefuses(t *testing.T) {
	dir := t.TempDir()
	fresh := memberFiles(t, dir, "fresh", 4, 3<<20)
	taken := memberFiles(t, dir, "taken", 3, 3<<20)
	createArray(t, append([]string{"--level", "5", "--chunk", "64K", "--name", "test:taken"}, taken...)...)
	small := memberFiles(t, dir, "small", 1, 1<<20)[0]
	gpt := memberFiles(t, dir, "gpt", 1, 3<<20)[0]
	writeAt(t, gpt, 512, []byte("EFI PART"))
	link := filepath.Join(dir, "link.img")
	if err := os.Symlink(fresh[0], link); err != nil {
		t.Fatal(err)
	}
	all := append(append(append([]string{}, fresh...), taken...), small, gpt)
	before := sums(t, all)

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--level", "7", "--name", "x", fresh[0], fresh[1], fresh[2]}, 2, `--level "7"`},
		{[]string{"--level", "linear", "--name", "x", fresh[0], fresh[1]}, 2, `--level "linear"`},
		{[]string{"--name", "x", fresh[0], fresh[1]}, 2, "--level is required"},
		{[]string{"--level", "5", "--chunk", "3K", "--name", "x", fresh[0], fresh[1], fresh[2]}, 2, `--chunk "3K"`},
		{[]string{"--level", "5", "--chunk", "lots", "--name", "x", fresh[0], fresh[1], fresh[2]}, 2, `--chunk "lots"`},
		{[]string{"--level", "5", "--chunk", "2K", "--name", "x", fresh[0], fresh[1], fresh[2]}, 2, `--chunk "2K"`},
		{[]string{"--level", "5", fresh[0], fresh[1], fresh[2]}, 2, "--name is required"},
		{[]string{"--level", "5", "--name", "a/b", fresh[0], fresh[1], fresh[2]}, 2, `--name "a/b"`},
		{[]string{"--level", "5", "--name", strings.Repeat("n", 33), fresh[0], fresh[1], fresh[2]}, 2, "at most 32 bytes"},
		{[]string{"--level", "5", "--name", "x", fresh[0], fresh[1]}, 2, "raid5 needs at least 3 active members, 2 given"},
		{[]string{"--level", "6", "--name", "x", "--force", fresh[0], fresh[1], fresh[2]}, 2, "raid6 needs at least 4 active members, 3 given"},
		{[]string{"--level", "1", "--name", "x", fresh[0]}, 2, "raid1 needs at least 2 active members"},
		{[]string{"--level", "5", "--spares", "1", "--name", "x", fresh[0], fresh[1], fresh[2]}, 2, "raid5 needs at least 3 active members, 2 given (3 members, 1 spares)"},
		{[]string{"--level", "0", "--spares", "1", "--name", "x", fresh[0], fresh[1], fresh[2]}, 2, "--spares 1"},
		{[]string{"--level", "1", "--spares", "-1", "--name", "x", fresh[0], fresh[1], fresh[2]}, 2, "--spares -1"},
		{[]string{"--level", "0", "--bitmap", "--name", "x", fresh[0], fresh[1]}, 2, "--bitmap: raid0"},
		{[]string{"--level", "5", "--name", "x", fresh[0], fresh[1], fresh[0]}, 2, "are the same member"},
		{[]string{"--level", "5", "--name", "x", fresh[0], fresh[1], link}, 2, "are the same member"},
		{[]string{"--level", "5", "--name", "x", fresh[0], fresh[1], filepath.Join(dir, "nonexistent.img")}, 1, "nonexistent.img: no such file"},
		{[]string{"--level", "5", "--name", "x", fresh[0], fresh[1], taken[2]}, 1, "taken2.img holds an md v1.2 superblock; nothing written (--force overwrites it)"},
		{[]string{"--level", "5", "--name", "x", fresh[0], fresh[1], gpt}, 1, "holds a GPT partition table"},
		{[]string{"--level", "5", "--name", "x", fresh[0], fresh[1], small}, 1, "too small"},
		{[]string{"--levle", "5", "--name", "x", fresh[0], fresh[1], fresh[2]}, 2, ""},
	} {
		code, out, errOut := gatewayd(t, append([]string{"array", "create"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) || out != "" {
			t.Errorf("array create %q exited %d, want %d with %q:\n%s%s", tc.args, code, tc.code, tc.msg, out, errOut)
		}
	}
	// Another command holds a member.
	lock, err := os.Open(fresh[2])
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := gatewayd(t, "array", "create", "--level", "5", "--name", "x", fresh[0], fresh[1], fresh[2])
	lock.Close()
	if code != 1 || !strings.Contains(errOut, "in use") {
		t.Errorf("create on a locked member exited %d: %s", code, errOut)
	}
	if after := sums(t, all); !slicesEqual(before, after) {
		t.Errorf("a refused create changed members:\nbefore %v\nafter  %v", before, after)
	}

	// --force overwrites the old superblock and the partition table, and lowers raid1 to one member.
	createArray(t, "--level", "5", "--name", "test:forced", "--force", fresh[0], taken[2], gpt)
	if _, out, _ := gatewayd(t, "array", "examine", taken[2]); !strings.Contains(out, "test:forced") {
		t.Errorf("forced create did not take the member:\n%s", out)
	}
	if b, _ := os.ReadFile(gpt); bytes.Contains(b[:4096], []byte("EFI PART")) {
		t.Error("forced create left the GPT header in place")
	}
	createArray(t, "--level", "1", "--name", "test:single", "--force", fresh[3])
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

// TestArrayExamineBadMembers: a member without md magic and one with a corrupted superblock are
// reported on stderr with exit 1, and the good members are still printed.
func TestArrayExamineBadMembers(t *testing.T) {
	dir := t.TempDir()
	paths := memberFiles(t, dir, "m", 3, 2<<20)
	createArray(t, append([]string{"--level", "raid5", "--chunk", "64K", "--name", "test:ex"}, paths...)...)
	junk := memberFiles(t, dir, "junk", 1, 2<<20)[0]
	writeAt(t, paths[2], 4096+0x20, []byte("X")) // set_name: the checksum no longer matches
	code, out, errOut := gatewayd(t, "array", "examine", paths[0], junk, paths[2], paths[1])
	if code != 1 {
		t.Errorf("examine exited %d, want 1", code)
	}
	if !strings.Contains(out, paths[0]+":\n") || !strings.Contains(out, paths[1]+":\n") || strings.Contains(out, junk) || strings.Contains(out, paths[2]) {
		t.Errorf("stdout should hold exactly the good members' reports:\n%s", out)
	}
	if !strings.Contains(errOut, junk+": no md superblock") || !strings.Contains(errOut, paths[2]+": md superblock: field sb_csum") ||
		!strings.Contains(errOut, "2 of 4 members without a usable md superblock") {
		t.Errorf("stderr:\n%s", errOut)
	}
	for _, args := range [][]string{{"array", "examine"}, {"array"}, {"array", "frobnicate"}} {
		if code, _, _ := gatewayd(t, args...); code != 2 {
			t.Errorf("gatewayd %q exited %d, want 2", args, code)
		}
	}
}

// TestArrayCheckRefuses: members that are not md, that belong to two arrays or that are too few to start
// the array are errors (exit 1), and nothing is written.
func TestArrayCheckRefuses(t *testing.T) {
	a, b, junk := twoArrays(t)
	all := append(append(append([]string{}, a...), b...), junk)
	before := sums(t, all)
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{a[0], a[1], junk}, junk + ": no md superblock"},
		{[]string{a[0], a[1], b[0]}, "members of several arrays given"},
		{[]string{a[0]}, "too many members missing to start: 1 of 3 members present"},
		{[]string{a[0], filepath.Join(filepath.Dir(junk), "gone.img")}, "gone.img: no such file"},
	} {
		code, _, errOut := gatewayd(t, append([]string{"array", "check"}, tc.args...)...)
		if code != 1 || !strings.Contains(errOut, tc.msg) {
			t.Errorf("check %q exited %d, want 1 with %q:\n%s", tc.args, code, tc.msg, errOut)
		}
	}
	if code, _, _ := gatewayd(t, "array", "check"); code != 2 {
		t.Errorf("check without members exited %d, want 2", code)
	}
	if after := sums(t, all); !slicesEqual(before, after) {
		t.Errorf("a refused check changed members")
	}
}

// startServe runs `gatewayd serve` in-process on a free loopback port and returns its address, a stop
// function (a signal's effect) and the exit code channel.
func startServe(t *testing.T, backings ...string) (addr string, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	var logs bytes.Buffer
	go func() {
		args := append([]string{"serve", "--listen", "127.0.0.1:0", "--iqn", "iqn.2026-11.org.opensan:test"}, backings...)
		done <- Main(ctx, args, io.Discard, pw)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	for addr == "" && sc.Scan() {
		logs.WriteString(sc.Text() + "\n")
		if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			addr = a
		}
	}
	go io.Copy(io.Discard, pr)
	if addr == "" {
		cancel()
		t.Fatalf("gatewayd serve exited %d before listening:\n%s", <-done, logs.String())
	}
	return addr, func() int {
		cancel()
		select {
		case code := <-done:
			return code
		case <-time.After(20 * time.Second):
			t.Fatal("gatewayd serve did not stop within 20 s")
			return -1
		}
	}
}

// TestServeMD exports two arrays as LUNs 0 and 1, reads their capacities through iSCSI, writes to one,
// stops the target and expects clean superblocks, the data on the member and a check without mismatch.
func TestServeMD(t *testing.T) {
	dir := t.TempDir()
	r5 := memberFiles(t, dir, "r5-", 3, 3<<20)
	r1 := memberFiles(t, dir, "r1-", 2, 2<<20+60<<10) // md rounds raid1 members down to 64 KiB
	createArray(t, append([]string{"--level", "5", "--chunk", "64K", "--name", "test:lun0"}, r5...)...)
	createArray(t, append([]string{"--level", "1", "--name", "test:lun1"}, r1...)...)

	addr, stop := startServe(t, "md:"+strings.Join(r5, ","), "md:"+strings.Join(r1, ","))
	i := dialLogin(t, addr, "iqn.2026-11.org.opensan:test")
	i.ready(0)
	i.ready(1)
	if got := i.capacity(0); got != 4<<20 { // 2 data members x 2 MiB
		t.Errorf("LUN 0 capacity %d, want %d", got, 4<<20)
	}
	if got := i.capacity(1); got != 1<<20 {
		t.Errorf("LUN 1 capacity %d, want %d", got, 1<<20)
	}
	data := bytes.Repeat([]byte("opensan!"), 512)
	i.write10(0, 0, data)
	// While serving, the array is open and dirty, and its members are claimed.
	if _, out, _ := gatewayd(t, "array", "examine", r5[0]); !strings.Contains(out, "State : active\n") {
		t.Errorf("examine while serving:\n%s", out)
	}
	if code, _, errOut := gatewayd(t, append([]string{"array", "check"}, r5...)...); code != 1 || !strings.Contains(errOut, "in use") {
		t.Errorf("check while serving exited %d: %s", code, errOut)
	}
	i.c.Close()
	if code := stop(); code != 0 {
		t.Fatalf("gatewayd serve exited %d after stop, want 0", code)
	}

	code, out, errOut := gatewayd(t, append(append([]string{"array", "examine"}, r5...), r1...)...)
	if code != 0 || strings.Count(out, "          State : clean\n") != 5 {
		t.Errorf("after serve, examine exited %d:\n%s%s", code, out, errOut)
	}
	// Left-symmetric RAID5: stripe 0 keeps data chunk 0 on member 0, at the data offset.
	got := make([]byte, len(data))
	f, err := os.Open(r5[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Errorf("member 0 does not hold the written data at its data offset (%v)", err)
	}
	if code, out, errOut := gatewayd(t, append([]string{"array", "check"}, r5...)...); code != 0 {
		t.Errorf("check after serve exited %d:\n%s%s", code, out, errOut)
	}
}

// TestServeMDRefuses: a bad md: backing is an error before anything is served.
func TestServeMDRefuses(t *testing.T) {
	a, b, junk := twoArrays(t)
	before := sums(t, append(append([]string{}, a...), b...))
	for _, tc := range []struct {
		backings []string
		code     int
		msg      string
	}{
		{[]string{"md:" + a[0] + "," + filepath.Join(filepath.Dir(junk), "gone.img")}, 1, "gone.img: no such file"},
		{[]string{"md:" + a[0] + "," + a[1] + "," + junk}, 1, junk + ": no md superblock"},
		{[]string{"md:" + a[0] + "," + a[1] + "," + b[0]}, 1, "members of several arrays given"},
		{[]string{"md:" + a[0]}, 1, "too many members missing to start"},
		{[]string{"md:" + strings.Join(b, ","), "md:" + b[1]}, 1, "in use"},
		{[]string{"md:" + a[0] + ",," + a[1]}, 2, "no empty member"},
		{[]string{"md:"}, 2, "no empty member"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var errOut bytes.Buffer
		args := append([]string{"serve", "--listen", "127.0.0.1:0"}, tc.backings...)
		code := Main(ctx, args, io.Discard, &errOut)
		cancel()
		if code != tc.code || !strings.Contains(errOut.String(), tc.msg) || strings.Contains(errOut.String(), "listening on") {
			t.Errorf("serve %q exited %d, want %d with %q before listening:\n%s", tc.backings, code, tc.code, tc.msg, errOut.String())
		}
	}
	// Refused assemblies wrote nothing; the one that assembled b before the second backing failed stopped
	// it cleanly again.
	after := sums(t, a)
	if !slicesEqual(before[:3], after) {
		t.Error("refused serve changed the members of a")
	}
	if _, out, _ := gatewayd(t, append([]string{"array", "examine"}, b...)...); strings.Count(out, "State : clean\n") != 2 {
		t.Errorf("b after a refused serve:\n%s", out)
	}
}

// TestArraySpares creates a RAID5 of three members and a hot spare, then checks it with one active member
// left out: the array assembles degraded, rebuilds onto the spare before checking, and the spare is an
// active member afterwards.
func TestArraySpares(t *testing.T) {
	paths := memberFiles(t, t.TempDir(), "m", 4, 3<<20)
	code, out, errOut := gatewayd(t, append([]string{"array", "create", "--level", "5", "--chunk", "64K", "--spares", "1", "--name", "test:spare"}, paths...)...)
	if code != 0 || !strings.Contains(out, "Member:  "+paths[3]+" (spare)\n") || !strings.Contains(out, fmt.Sprintf("Size:    %d bytes", 4<<20)) {
		t.Fatalf("create with a spare exited %d:\n%s%s", code, out, errOut)
	}
	_, out, _ = gatewayd(t, "array", "examine", paths[3])
	if !strings.Contains(out, "   Device Role : spare\n") || !strings.Contains(out, "   Array State : AAA ") {
		t.Errorf("examine of the spare:\n%s", out)
	}
	code, out, errOut = gatewayd(t, "array", "check", paths[0], paths[1], paths[3])
	if code != 0 || !strings.Contains(out, "mismatches: 0 (") || !strings.Contains(errOut, "running degraded: slot 2") {
		t.Fatalf("check with slot 2 missing and a spare exited %d:\n%s%s", code, out, errOut)
	}
	_, out, _ = gatewayd(t, "array", "examine", paths[3])
	if !strings.Contains(out, "   Device Role : Active device 2\n") || !strings.Contains(out, "          State : clean\n") {
		t.Errorf("examine of the rebuilt spare:\n%s", out)
	}
}

// TestArrayAssumeClean: --assume-clean on zero-filled members skips the sync and yields a consistent array.
func TestArrayAssumeClean(t *testing.T) {
	paths := memberFiles(t, t.TempDir(), "m", 4, 3<<20)
	code, out, errOut := gatewayd(t, append([]string{"array", "create", "--level", "6", "--chunk", "64K", "--assume-clean", "--name", "test:zero"}, paths...)...)
	if code != 0 || strings.Contains(errOut, "initial sync") || !strings.Contains(out, "State:   clean, assumed in sync (--assume-clean)") {
		t.Fatalf("create --assume-clean exited %d:\n%s%s", code, out, errOut)
	}
	if code, out, errOut := gatewayd(t, append([]string{"array", "check"}, paths...)...); code != 0 {
		t.Errorf("check exited %d:\n%s%s", code, out, errOut)
	}
}

func TestArrayHelp(t *testing.T) {
	for _, args := range [][]string{{"array", "--help"}, {"array", "create", "-h"}, {"array", "check", "--help"}, {"array", "examine", "-h"}} {
		code, _, errOut := gatewayd(t, args...)
		if code != 0 || !strings.Contains(errOut, "usage: gatewayd array") {
			t.Errorf("gatewayd %q exited %d:\n%s", args, code, errOut)
		}
	}
}

// twoArrays creates a RAID5 of 3 members (test:a) and a RAID1 of 2 (test:b) on small files, and a file
// with no superblock, for the refusal tests.
func twoArrays(t *testing.T) (a, b []string, junk string) {
	t.Helper()
	dir := t.TempDir()
	a = memberFiles(t, dir, "a", 3, 2<<20)
	b = memberFiles(t, dir, "b", 2, 2<<20)
	createArray(t, append([]string{"--level", "5", "--chunk", "64K", "--name", "test:a"}, a...)...)
	createArray(t, append([]string{"--level", "1", "--name", "test:b"}, b...)...)
	return a, b, memberFiles(t, dir, "junk", 1, 2<<20)[0]
}
