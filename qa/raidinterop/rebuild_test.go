//go:build qa

package raidinterop

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"opensan/raid/array"
	"opensan/raid/md"
)

// Part 4: a rebuild this engine stopped partway, resumed by md.

// rebuildRate paces the host's rebuild so Close lands in its middle: bytes/s of member I/O as the engine
// counts it (a whole row of every member per chunk rebuilt): about a second for a 32 MiB member.
const rebuildRate = 64 << 20

// rebuildCases are part 4: RAID5 of 4 without bitmap, RAID1 of 2 with a bitmap (md must not take our
// recovery offset for a bitmap-based partial recovery and skip the rest) on 4096-byte sectors.
func rebuildCases() []*hostArray {
	cs := []*hostArray{
		{level: md.LevelRAID5, n: 4, bs: 512, member: smallMemberSize},
		{level: md.LevelRAID1, n: 2, bitmap: true, bs: 4096, member: smallMemberSize},
	}
	for _, c := range cs {
		c.rebuild = true
		c.name = caseName("rebuild", c)
	}
	return cs
}

// interruptRebuild takes c as prepareOurs left it (filled and closed clean), assembles it without member
// 0, adds a blank file of the same size as a spare, lets the engine rebuild onto it at rebuildRate and
// closes the array when a share of the member between 1/5 and 3/5 (from c.seed) is done. It checks that
// the new member's superblock records a recovery offset strictly inside its data, records it in
// c.recoveryOffset and c.dataSectors, and puts the new file in c.paths[0]: member 0's old file is not
// given to the guest.
func interruptRebuild(dir string, c *hostArray) (string, error) {
	blank := filepath.Join(dir, c.name+"-m0-new")
	if err := sparseFile(blank, c.memberBytes()); err != nil {
		return "", err
	}
	paths := append([]string{blank}, c.paths[1:]...)
	devs, closeAll, err := openMembers(paths, c.bs)
	if err != nil {
		return "", err
	}
	defer closeAll()
	a, err := array.Assemble(devs[1:], array.AssembleConfig{SyncRate: array.SyncRate{Min: rebuildRate, Max: rebuildRate}})
	if err != nil {
		return "", fmt.Errorf("assemble without member 0: %w", err)
	}
	if st := a.Status(); st.Degraded != 1 || st.Members[0].State != "missing" || !a.InSync() {
		a.Close()
		return "", fmt.Errorf("assembled without member 0: %d degraded, members %+v, in sync %v; want slot 0 missing only", st.Degraded, st.Members, a.InSync())
	}
	if err := a.AddSpare(devs[0]); err != nil {
		a.Close()
		return "", fmt.Errorf("add spare: %w", err)
	}
	share := 0.2 + 0.4*rand.New(rand.NewPCG(c.seed, 4)).Float64()
	var st array.Status
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st = a.Status()
		if st.Action == array.ActionRecover && float64(st.Done) >= share*float64(st.Total) {
			break
		}
		if time.Now().After(deadline) || st.Degraded == 0 {
			a.Close()
			return "", fmt.Errorf("rebuild onto the spare did not reach %.0f%% in time or finished first: %+v", share*100, st)
		}
	}
	if err := a.Close(); err != nil {
		return "", fmt.Errorf("close during the rebuild (%d of %d member bytes done): %w", st.Done, st.Total, err)
	}
	f, err := array.Examine(devs[0])
	if err != nil {
		return "", fmt.Errorf("examine the new member 0: %w", err)
	}
	sb := f.Super
	role := uint16(0xffff)
	if int(sb.DevNumber) < len(sb.DevRoles) {
		role = sb.DevRoles[sb.DevNumber]
	}
	switch {
	case sb.FeatureMap&md.FeatureRecoveryOffset == 0:
		return "", fmt.Errorf("new member 0 after the stopped rebuild: feature_map %#x lacks recovery_offset", sb.FeatureMap)
	case sb.RecoveryOffset == 0 || sb.RecoveryOffset >= sb.Size || sb.Size > sb.DataSize:
		return "", fmt.Errorf("new member 0: recovery_offset %d sectors, want strictly between 0 and its %d sectors of data (data_size %d)",
			sb.RecoveryOffset, sb.Size, sb.DataSize)
	case role != 0:
		return "", fmt.Errorf("new member 0: dev_number %d has role %#x, want slot 0", sb.DevNumber, role)
	case sb.ResyncOffset != md.ResyncClean:
		return "", fmt.Errorf("new member 0: resync_offset %d, want clean: the stopped rebuild left the array dirty", sb.ResyncOffset)
	}
	c.recoveryOffset, c.dataSectors = sb.RecoveryOffset, sb.Size
	c.paths = paths
	return fmt.Sprintf("rebuild stopped at %d of %d member bytes (aimed at %.0f%%): recovery_offset %d of %d sectors, dev_number %d, events %d",
		st.Done, st.Total, share*100, sb.RecoveryOffset, sb.Size, sb.DevNumber, sb.Events), nil
}

// checkRebuildInGuest: md assembled the array with its partly rebuilt member 0, resumed the recovery at
// our recovery offset, finished it, and the data and the parity (or mirror) are right.
func checkRebuildInGuest(t *testing.T, c *hostArray, res *guestResult) {
	st, ok := res.md[c.uuid]
	if !ok {
		t.Fatalf("uuid %s (%d members, member 0 partly rebuilt): mdadm --assemble --scan did not assemble it", c.uuid, c.n)
	}
	dev := st.dev
	checkDetail(t, dev, strings.Join(res.detail[dev], "\n"), c.uuid, homehost+":"+c.name)
	if rc, ran := res.run[dev]; ran {
		t.Errorf("%s: mdadm --assemble --scan left it inactive; mdadm --run started it (status %d)", dev, rc)
	} else {
		t.Logf("%s: mdadm --assemble --scan started it (no --run)", dev)
	}
	if want := fmt.Sprintf("raid%d", c.level); st.level != want || st.raidDisks != c.n || st.size != c.size {
		t.Errorf("%s: md runs it as %s with %d raid disks and %d bytes, want %s with %d and %d", dev, st.level, st.raidDisks, st.size, want, c.n, c.size)
	}
	if st.resyncStart != "none" {
		t.Errorf("%s: right after assembly resync_start=%s: md did not take the parity as in sync", dev, st.resyncStart)
	}
	newDisk := res.vd[c.serials[0]]
	if newDisk == "" {
		t.Fatalf("no guest disk with serial %s (member 0's new file)", c.serials[0])
	}
	// What md made of our recovery offset: recovery_start of the member (from the superblock) and where
	// its recovery thread started (sync_completed "START / END", set when the thread starts and left alone
	// until its first checkpoint, which the throttled rate keeps away).
	rec, ok := res.recover[dev]
	if !ok {
		t.Fatalf("%s: the guest saw no recovery to resume (sync_action and recovery_start after assembly: %+v)", dev, res.rdevs["start"][dev])
	}
	want := fmt.Sprintf("%d / %d", c.recoveryOffset, c.dataSectors)
	t.Logf("%s: md right after assembly: sync_action %s, sync_completed %q, %d degraded; our recovery_offset %d of %d sectors",
		dev, rec.action, rec.completed, rec.degraded, c.recoveryOffset, c.dataSectors)
	if rec.action != "recover" || rec.completed != want || rec.degraded != 1 {
		t.Errorf("%s: md's recovery right after assembly: sync_action %q, sync_completed %q, %d degraded; want recover from our recovery offset, %q, 1",
			dev, rec.action, rec.completed, rec.degraded, want)
	}
	for _, r := range res.rdevs["start"][dev] {
		if r.disk == newDisk {
			t.Logf("%s: md's member %s (the new member 0) right after assembly: slot %s, recovery_start %s, state %s", dev, r.disk, r.slot, r.recoveryStart, r.state)
		}
	}
	checkRdevs(t, dev, res.rdevs["start"][dev], c, newDisk, strconv.FormatUint(c.recoveryOffset, 10))
	// mdadm --detail during the recovery: the new member rebuilding in slot 0, and a progress no lower
	// than our offset (mdadm reads md's position, which the crawl may have moved a little past it).
	detail := strings.Join(res.rdetail["start"][dev], "\n")
	t.Logf("%s: mdadm --detail during the recovery:\n%s", dev, detail)
	pct := regexp.MustCompile(`(?m)^\s*Rebuild Status : (\d+)% complete$`).FindStringSubmatch(detail)
	floor := int(c.recoveryOffset * 100 / c.dataSectors)
	if pct == nil {
		t.Errorf("%s: mdadm --detail during the recovery has no Rebuild Status", dev)
	} else if p, _ := strconv.Atoi(pct[1]); p < floor || p >= 100 {
		t.Errorf("%s: mdadm --detail: Rebuild Status %s%%, want from %d%% (our offset) to 99%%", dev, pct[1], floor)
	}
	if !regexp.MustCompile(`(?m)^\s+\d+\s+\d+\s+\d+\s+0\s+spare rebuilding\s+/dev/` + newDisk + `$`).MatchString(detail) {
		t.Errorf("%s: mdadm --detail during the recovery does not show %s as \"spare rebuilding\" in RaidDevice 0", dev, newDisk)
	}

	t.Logf("%s: mdadm --detail after the recovery:\n%s", dev, strings.Join(res.rdetail["end"][dev], "\n"))
	done, ok := res.recovered[dev]
	switch {
	case !ok:
		t.Fatalf("%s: the guest did not report the end of the recovery", dev)
	case done.action != "idle" || done.last != "recovery" || done.degraded != 0:
		t.Errorf("%s: after mdadm --wait (status %d): sync_action %s, last_sync_action %s, %d degraded; want idle after recovery, 0",
			dev, done.waitRC, done.action, done.last, done.degraded)
	default:
		t.Logf("%s: recovery over (mdadm --wait: status %d after %.1f s)", dev, done.waitRC, done.seconds)
	}
	checkRdevs(t, dev, res.rdevs["end"][dev], c, newDisk, "none")
	if got := res.hash[dev]; got != c.hash {
		t.Errorf("%s: sha256 in the guest after the recovery %q, written by the host %s", dev, got, c.hash)
	}
	switch got, ok := res.mismatch[dev]; {
	case !ok:
		t.Errorf("%s: not checked after the recovery", dev)
	case res.lastSync[dev] != "check":
		t.Errorf("%s: last_sync_action %q after check", dev, res.lastSync[dev])
	case got != "0":
		t.Errorf("%s: md check after the recovery: mismatch_cnt %s, want 0", dev, got)
	default:
		t.Logf("%s: md check after the recovery: mismatch_cnt 0", dev)
	}
}

// checkRdevs checks md's view of each member: c's files in their slots, the new member 0 with
// recovery_start newStart, the others in sync.
func checkRdevs(t *testing.T, dev string, rdevs []rdevState, c *hostArray, newDisk, newStart string) {
	t.Helper()
	slots := map[string]string{}
	for slot, sr := range c.serials {
		slots[sr] = strconv.Itoa(slot)
	}
	disks := map[string]bool{}
	for _, r := range rdevs {
		disks[r.disk] = true
		wantSlot, wantStart, wantState := slots[r.serial], "none", "in_sync"
		if r.disk == newDisk {
			wantStart = newStart
			if newStart != "none" {
				wantState = ""
			}
		}
		if r.slot != wantSlot || r.recoveryStart != wantStart || (wantState != "" && r.state != wantState) {
			t.Errorf("%s: member %s (serial %s): slot %s, recovery_start %s, state %s; want slot %s, recovery_start %s, state %s",
				dev, r.disk, r.serial, r.slot, r.recoveryStart, r.state, wantSlot, wantStart, cmp.Or(wantState, "not in_sync"))
		}
		if r.disk == newDisk && newStart != "none" && strings.Contains(r.state, "in_sync") {
			t.Errorf("%s: the recovering member %s is in_sync (%s)", dev, r.disk, r.state)
		}
	}
	if len(rdevs) != c.n || !disks[newDisk] {
		t.Errorf("%s: md has %d members %+v, want %d with %s", dev, len(rdevs), rdevs, c.n, newDisk)
	}
}

// checkSpare: md took the spare as a spare. mdadm --detail lists it with RaidDevice "-" and state
// "spare", and counts it; sysfs gives it no slot.
func checkSpare(t *testing.T, c *hostArray, dev string, res *guestResult) {
	detail := strings.Join(res.detail[dev], "\n")
	if m := regexp.MustCompile(`(?m)^\s*Spare Devices : (\d+)$`).FindStringSubmatch(detail); m == nil || m[1] != strconv.Itoa(c.spares) {
		t.Errorf("%s: mdadm --detail: Spare Devices %v, want %d", dev, m, c.spares)
	}
	rows := regexp.MustCompile(`(?m)^\s+\d+\s+\d+\s+\d+\s+-\s+spare\s+/dev/(\S+)$`).FindAllStringSubmatch(detail, -1)
	var listed []string
	for _, r := range rows {
		listed = append(listed, r[1])
	}
	for _, sr := range c.serials[c.n:] {
		disk := res.vd[sr]
		if !slices.Contains(listed, disk) {
			t.Errorf("%s: mdadm --detail lists %v as spares, not %s (serial %s)", dev, listed, cmp.Or(disk, "?"), sr)
		}
		found := false
		for _, r := range res.rdevs["assembled"][dev] {
			if r.disk == disk {
				found = true
				if r.slot != "none" || r.state != "spare" {
					t.Errorf("%s: spare %s in sysfs: slot %s, state %s; want none, spare", dev, disk, r.slot, r.state)
				}
			}
		}
		if !found {
			t.Errorf("%s: spare %s (serial %s) is not a member in sysfs", dev, cmp.Or(disk, "?"), sr)
		}
	}
	if len(rows) == len(c.serials)-c.n {
		t.Logf("%s: mdadm --detail lists the spare: %v", dev, listed)
	}
}
