//go:build qa

// Package raidinterop checks that the RAID engine (raid/array) and stock Linux md read each other's arrays,
// in one boot of a Debian guest (qa/guest) with Debian's kernel and mdadm 4.2:
//
//  1. Arrays of every level written by us on sparse files (with and without bitmap, 512- and 4096-byte
//     sectors, RAID5/6 degraded by one member, RAID6 by two, the missing members' files left out of the
//     guest): the guest's "mdadm --assemble --scan" starts them all (the degraded ones too, without
//     --run), md takes them as clean, mdadm --detail shows their UUID, name and creation time, their
//     sha256 equals the host's, and md's scrub ("check") counts no mismatch.
//  2. Arrays created by stock mdadm in the guest with default options and filled there: our Assemble reads
//     the same sha256 from the member files.
//  3. RAID5, RAID6 and RAID1 crashed on the host in the middle of a random workload and repaired by our
//     Assemble (flushed data intact, Check clean): md assembles them and its check agrees.
//  4. A RAID5 of 4 and a RAID1 of 2 whose member 0 we replaced by a blank file and stopped rebuilding
//     partway (its superblock carries our recovery_offset; member 0's old file is left out): mdadm
//     --assemble --scan starts them, md resumes the recovery exactly at our offset (sync_completed and
//     the member's recovery_start, read while md's rebuild speed is throttled to a crawl), finishes it,
//     and the sha256 and md's check agree with the host. Part 1 also has a RAID5 with a hot spare, which
//     mdadm --detail and sysfs must show as a spare.
//
// Run:   go test -tags qa -v -timeout 15m ./qa/raidinterop
// OPENSAN_RAIDINTEROP_SEED=N changes the seed every case derives its data and workload from (printed).
package raidinterop

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"opensan/qa/guest"
	"opensan/raid/array"
	"opensan/raid/md"
)

// defaultSeed makes runs reproducible; OPENSAN_RAIDINTEROP_SEED overrides it.
const defaultSeed = 20261127

// guestConfig is the image: stock mdadm and md's personalities. raid456 pulls in async_tx, xor, raid6_pq
// and (by its softdep) crc32c, which the module loader resolves.
var guestConfig = guest.Config{
	Packages: []string{"mdadm"},
	Modules:  []string{"raid0", "raid1", "raid10", "raid456"},
}

// stockCase is an array stock mdadm creates in the guest (part 2), as /dev/md<tag>: tags from 200 up, clear
// of the numbers mdadm --assemble --scan gives (md127 down).
type stockCase struct {
	tag      string
	level, n int
	bs       int
	disks    []vdisk
}

func (s *stockCase) name() string {
	name := fmt.Sprintf("md%s-r%d-%d", s.tag, s.level, s.n)
	if s.bs == 4096 {
		name += "-4k"
	}
	return name
}

// stockCases: every level with mdadm's defaults (chunk 512 KiB, left-symmetric, near=2, no bitmap at this
// size, data offset chosen by mdadm), and one RAID5 on 4096-byte-sector disks.
func stockCases() []*stockCase {
	return []*stockCase{
		{tag: "200", level: md.LevelRAID0, n: 2, bs: 512}, {tag: "201", level: md.LevelRAID1, n: 2, bs: 512},
		{tag: "202", level: md.LevelRAID5, n: 3, bs: 512}, {tag: "203", level: md.LevelRAID6, n: 4, bs: 512},
		{tag: "204", level: md.LevelRAID10, n: 4, bs: 512}, {tag: "205", level: md.LevelRAID5, n: 3, bs: 4096},
	}
}

func runSeed(t *testing.T) uint64 {
	seed := uint64(defaultSeed)
	if s := os.Getenv("OPENSAN_RAIDINTEROP_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("OPENSAN_RAIDINTEROP_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (OPENSAN_RAIDINTEROP_SEED=%d reproduces this run)", seed, seed)
	return seed
}

func TestMdInterop(t *testing.T) {
	begin := time.Now()
	seed := runSeed(t)
	im := guest.MustBuild(t, guestConfig)
	dir := t.TempDir()

	// Host side of parts 1, 3 and 4, two cases at a time (this box has two cores).
	ours, crashes, rebuilds := ourCases(), crashCases(), rebuildCases()
	all := append(append(append([]*hostArray(nil), ours...), crashes...), rebuilds...)
	t.Run("host", func(t *testing.T) {
		for _, c := range all {
			c.seed = caseSeed(seed, c.name)
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				start := time.Now()
				if c.crash {
					rep, err := prepareCrash(dir, c)
					t.Logf("seed %d: %v", c.seed, rep)
					if err != nil {
						t.Errorf("RAID%d, %d members of %d bytes, %d-byte blocks, bitmap %v, chunk %d, bitmap chunk %d, seed %d: %v",
							c.level, c.n, crashMemberSize, c.bs, c.bitmap, crashChunk, crashBitmapChunk, c.seed, err)
						return
					}
				} else if err := prepareOurs(dir, c); err != nil {
					t.Errorf("RAID%d, %d members of %d bytes, %d spares, %d-byte blocks, bitmap %v, seed %d: %v",
						c.level, c.n, c.memberBytes(), c.spares, c.bs, c.bitmap, c.seed, err)
					return
				}
				if c.rebuild {
					rep, err := interruptRebuild(dir, c)
					if err != nil {
						t.Errorf("RAID%d, %d members of %d bytes, %d-byte blocks, bitmap %v, seed %d: rebuild of member 0: %v",
							c.level, c.n, c.memberBytes(), c.bs, c.bitmap, c.seed, err)
						return
					}
					t.Logf("seed %d: %s", c.seed, rep)
				}
				c.prepared = true
				t.Logf("seed %d: uuid %s, %d bytes, sha256 %s (%v)", c.seed, c.uuid, c.size, c.hash, time.Since(start).Round(time.Millisecond))
			})
		}
	})
	hostDone := time.Now()

	// The guest's disks: our members (less the missing ones), then blank members for stock mdadm.
	var disks []vdisk
	for i, c := range all {
		if !c.prepared {
			continue
		}
		for slot, p := range c.paths {
			c.serials = append(c.serials, fmt.Sprintf("h%dm%d", i, slot))
			if !slices.Contains(c.missing, slot) {
				disks = append(disks, vdisk{path: p, serial: c.serials[slot], bs: c.bs})
			}
		}
	}
	stock := stockCases()
	var creates []string
	for _, s := range stock {
		var serials []string
		for i := range s.n {
			p := filepath.Join(dir, fmt.Sprintf("%s-m%d", s.name(), i))
			if err := sparseFile(p, memberSize); err != nil {
				t.Fatal(err)
			}
			d := vdisk{path: p, serial: fmt.Sprintf("s%sm%d", s.tag, i), bs: s.bs}
			s.disks = append(s.disks, d)
			disks = append(disks, d)
			serials = append(serials, d.serial)
		}
		creates = append(creates, gcreateLine(s.tag, s.level, s.n, serials))
	}
	t.Logf("booting the guest with %d disks", len(disks))
	r := guest.MustRun(t, im, guest.RunConfig{
		Script:   strings.Replace(guestScript, "@GCREATE@", strings.Join(creates, "\n"), 1),
		Files:    []guest.File{{Path: "/etc/mdadm/mdadm.conf", Data: []byte(mdadmConf)}},
		QEMUArgs: qemuDiskArgs(disks),
		CPUs:     2,
		MemoryMB: 1024,
		Timeout:  8 * time.Minute,
		Console: func(line string) {
			if !strings.HasPrefix(line, "DETAIL ") && !strings.HasPrefix(line, "GDETAIL ") && !strings.HasPrefix(line, "RDETAIL ") &&
				!strings.HasPrefix(line, "RDEV ") && !strings.HasPrefix(line, "VD ") {
				t.Logf("guest: %s", line)
			}
		},
	})
	guestDone := time.Now()
	res, err := parseGuest(r.Output)
	if err != nil {
		t.Fatal(err)
	}
	if r.ExitCode != 0 || !slices.Contains(res.steps, "done") {
		t.Errorf("guest script: status %d, steps %v", r.ExitCode, res.steps)
	}
	for _, to := range res.timeouts {
		t.Errorf("guest: timed out waiting for %s", to)
	}
	t.Logf("mdadm --assemble --scan: status %d\n%s", res.assembleRC, strings.Join(res.assembleOut, "\n"))

	t.Run("guest", func(t *testing.T) {
		for _, c := range all {
			t.Run(c.name, func(t *testing.T) {
				if !c.prepared {
					t.Fatal("the host side failed (see host/" + c.name + ")")
				}
				if c.rebuild {
					checkRebuildInGuest(t, c, res)
				} else {
					checkInGuest(t, c, res)
				}
			})
		}
	})
	t.Run("stock", func(t *testing.T) {
		for _, s := range stock {
			t.Run(s.name(), func(t *testing.T) { checkStock(t, s, res) })
		}
	})
	t.Logf("wall time %v: host preparation %v, guest boot %v (%d disks), host checks of stock arrays %v",
		time.Since(begin).Round(time.Second), hostDone.Sub(begin).Round(time.Second), guestDone.Sub(hostDone).Round(time.Second),
		len(disks), time.Since(guestDone).Round(time.Second))
}

// checkInGuest compares what the guest found for one of our arrays with what the host wrote.
func checkInGuest(t *testing.T, c *hostArray, res *guestResult) {
	st, ok := res.md[c.uuid]
	if !ok {
		t.Fatalf("uuid %s (%d of %d members given): mdadm --assemble --scan did not assemble it", c.uuid, c.n-len(c.missing), c.n)
	}
	detail := strings.Join(res.detail[st.dev], "\n")
	t.Logf("%s: mdadm --detail:\n%s", st.dev, detail)
	checkDetail(t, st.dev, detail, c.uuid, homehost+":"+c.name)
	if rc, ran := res.run[st.dev]; ran {
		if len(c.missing) == 0 {
			t.Errorf("%s: complete, yet mdadm --assemble --scan left it inactive (mdadm --run: status %d)", st.dev, rc)
		} else {
			t.Logf("%s: degraded, so mdadm --assemble --scan left it inactive; mdadm --run started it (status %d)", st.dev, rc)
		}
	}
	if want := fmt.Sprintf("raid%d", c.level); st.level != want || st.raidDisks != c.n {
		t.Errorf("%s: md runs it as %s with %d raid disks, want %s with %d", st.dev, st.level, st.raidDisks, want, c.n)
	}
	if c.level != md.LevelRAID0 && st.degraded != len(c.missing) {
		t.Errorf("%s: md says %d members missing, want %d", st.dev, st.degraded, len(c.missing))
	}
	if st.size != c.size {
		t.Errorf("%s: %d bytes in the guest, %d on the host", st.dev, st.size, c.size)
	}
	if c.level != md.LevelRAID0 && (st.syncAction != "idle" || st.resyncStart != "none") {
		t.Errorf("%s: right after assembly sync_action=%s resync_start=%s (array_state %s): md did not take it as clean and in sync",
			st.dev, st.syncAction, st.resyncStart, st.arrayState)
	}
	if got := res.hash[st.dev]; got != c.hash {
		t.Errorf("%s: sha256 in the guest %q, written by the host %s", st.dev, got, c.hash)
	}
	if c.spares > 0 {
		checkSpare(t, c, st.dev, res)
	}
	if !c.check() {
		return
	}
	got, ok := res.mismatch[st.dev]
	switch {
	case !ok:
		t.Errorf("%s: not checked (sync_action %q)", st.dev, res.noCheck[st.dev])
	case res.lastSync[st.dev] != "check":
		t.Errorf("%s: last_sync_action %q after check", st.dev, res.lastSync[st.dev])
	case got != "0":
		t.Errorf("%s: md check: mismatch_cnt %s, want 0", st.dev, got)
	default:
		t.Logf("%s: md check: mismatch_cnt 0", st.dev)
	}
}

// checkDetail checks that mdadm --detail describes the running array from its members' superblocks: it
// prints the set UUID, the name and a creation time of about now. mdadm leaves the superblocks out, and so
// prints none of the three, when the creation time it decodes from them differs from the kernel's.
func checkDetail(t *testing.T, dev, detail, uuid, name string) {
	t.Helper()
	field := func(key string) string {
		m := regexp.MustCompile(`(?m)^\s*` + key + ` : (.*)$`).FindStringSubmatch(detail)
		if m == nil {
			return ""
		}
		return strings.TrimSpace(m[1])
	}
	var bad []string
	if got := field("UUID"); got != uuid {
		bad = append(bad, fmt.Sprintf("UUID %q, want %s", got, uuid))
	}
	if got := field("Name"); got != name && !strings.HasPrefix(got, name+" ") {
		bad = append(bad, fmt.Sprintf("Name %q, want %s", got, name))
	}
	ct := field("Creation Time")
	if tm, err := time.Parse(time.ANSIC, ct); err != nil || time.Since(tm).Abs() > 24*time.Hour {
		bad = append(bad, fmt.Sprintf("Creation Time %q, want about %s (UTC)", ct, time.Now().UTC().Format(time.ANSIC)))
	}
	if len(bad) > 0 {
		t.Errorf("%s: mdadm --detail: %s", dev, strings.Join(bad, "; "))
	}
}

// checkStock assembles with our engine an array stock mdadm created and filled, and compares.
func checkStock(t *testing.T, s *stockCase, res *guestResult) {
	if rc, ok := res.created[s.tag]; !ok || rc != 0 {
		t.Fatalf("mdadm --create /dev/md%s: status %d (reported %v)\n%s", s.tag, rc, ok, strings.Join(res.createdOut[s.tag], "\n"))
	}
	if d := res.stockDetail[s.tag]; len(d) > 0 {
		t.Logf("mdadm --detail:\n%s", strings.Join(d, "\n"))
	}
	want, ok := res.stockHash[s.tag]
	if !ok || len(want) != 64 || res.stockDDRC[s.tag] != 0 {
		t.Fatalf("the guest did not fill and hash /dev/md%s (hash %q, dd status %d)", s.tag, want, res.stockDDRC[s.tag])
	}
	var paths []string
	for _, d := range s.disks {
		paths = append(paths, d.path)
	}
	devs, closeAll, err := openMembers(paths, s.bs)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	a, err := array.Assemble(devs, array.AssembleConfig{})
	if err != nil {
		t.Fatalf("array.Assemble of the members stock mdadm wrote: %v", err)
	}
	defer func() {
		if err := a.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	if got := mdadmUUID(a.UUID()); got != res.stockUUID[s.tag] {
		t.Errorf("uuid %s, mdadm says %s", got, res.stockUUID[s.tag])
	}
	if a.Level() != s.level || a.Disks() != s.n || a.Degraded() != 0 {
		t.Errorf("assembled as RAID%d with %d members (%d missing), want RAID%d with %d", a.Level(), a.Disks(), a.Degraded(), s.level, s.n)
	}
	if a.Size() != res.stockSize[s.tag] {
		t.Fatalf("size %d bytes, md's %d", a.Size(), res.stockSize[s.tag])
	}
	if !a.InSync() {
		t.Errorf("assembled out of sync (md stopped it clean)")
	}
	got, err := hashArray(a)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("sha256 read by our engine %s, written by the guest %s", got, want)
	} else {
		t.Logf("sha256 %s over %d bytes matches", got, a.Size())
	}
	if bad, err := a.Check(); err != nil || bad != 0 {
		t.Errorf("Check of md's redundancy: %d mismatched units, %v", bad, err)
	}
}
