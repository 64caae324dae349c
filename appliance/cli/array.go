package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"opensan/gateway/block"
	"opensan/raid/array"
	"opensan/raid/md"
)

const arrayUsage = `usage: gatewayd array COMMAND [flags] MEMBER...

Offline commands on the members (files or block devices) of md v1.2 arrays, the format Linux's mdadm
assembles too. Nothing else may use the members meanwhile: not a running "gatewayd serve md:...", not a
Linux md array.

commands:
  create   write the superblocks of a new array and bring it in sync
  examine  print each member's md superblock, like mdadm --examine
  check    assemble the members and compare redundancy with data (a scrub); exit 1 on mismatches
`

var arrayCommands = []command{
	{"create", "", runArrayCreate},
	{"examine", "", runArrayExamine},
	{"check", "", runArrayCheck},
}

func runArray(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, arrayUsage)
		return usagef("missing COMMAND: create, examine or check")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, arrayUsage)
		return flag.ErrHelp
	}
	for _, c := range arrayCommands {
		if c.name == args[0] {
			if err := c.run(ctx, args[1:], stdout, stderr); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			return nil
		}
	}
	fmt.Fprint(stderr, arrayUsage)
	return usagef("unknown command %q: want create, examine or check", args[0])
}

const createUsage = `usage: gatewayd array create --level L --name NAME [flags] MEMBER...

Writes md v1.2 superblocks on the MEMBERs (files or block devices, in slot order, the last --spares of
them hot spares; data starts 1 MiB into each) and brings the new array in sync before it returns:
mirrors copied, parity computed, progress on stderr. Interrupted, the array stays dirty and resyncs at
its next assembly. L is 0, 1, 5, 6 or 10 (or raid0 ... raid10); RAID5/6 use md's left-symmetric layout,
RAID10 near-2. The smallest member sets the size. NAME is stored as md's set name "HOSTNAME:NAME" (as
mdadm does) unless it holds a colon already. A member that carries an md superblock, a partition table,
a filesystem or an LVM label is refused unless --force.

flags:
`

type createOptions struct {
	level       string
	chunk       string
	name        string
	bitmap      bool
	spares      int
	force       bool
	assumeClean bool
}

// minMembers is the fewest active members create accepts per level, and with --force, md's own minimum.
var minMembers = map[int][2]int{
	md.LevelRAID0:  {2, 1},
	md.LevelRAID1:  {2, 1},
	md.LevelRAID5:  {3, 2}, // a 2-member RAID5 is a mirror with extra steps; md runs it
	md.LevelRAID6:  {4, 4},
	md.LevelRAID10: {2, 2},
}

func runArrayCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o createOptions
	fs := flag.NewFlagSet("array create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, createUsage); fs.PrintDefaults() }
	fs.StringVar(&o.level, "level", "", "RAID level `L`: 0, 1, 5, 6, 10 (or raid0, raid1, raid5, raid6, raid10)")
	fs.StringVar(&o.chunk, "chunk", "512K", "chunk `SIZE`, a power of two from 4K (ignored for raid1)")
	fs.StringVar(&o.name, "name", "", "array `NAME`: letters, digits, '.', '_', '-'; HOST:NAME sets the host part too")
	fs.BoolVar(&o.bitmap, "bitmap", false, "internal write-intent bitmap: after a crash only dirty regions resync (not raid0)")
	fs.IntVar(&o.spares, "spares", 0, "the last `N` MEMBERs are hot spares: a failed member is rebuilt onto one (not raid0)")
	fs.BoolVar(&o.force, "force", false, "overwrite members that hold an md superblock, a partition table or a filesystem; allow md's minimum member counts")
	fs.BoolVar(&o.assumeClean, "assume-clean", false, "skip the initial sync: only for members known to be all zeros")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	level, err := parseLevel(o.level)
	if err != nil {
		return err
	}
	cfg := array.CreateConfig{Level: level, Bitmap: o.bitmap, Spares: o.spares, AssumeClean: o.assumeClean}
	if cfg.Name, err = setName(o.name); err != nil {
		return err
	}
	if chunkSet(fs) && level == md.LevelRAID1 {
		fmt.Fprintln(stderr, "warning: --chunk ignored: raid1 has no chunks")
	}
	chunk, err := parseSize(o.chunk)
	if err != nil || chunk < 4096 || chunk&(chunk-1) != 0 || chunk > 1<<30 {
		return usagef("--chunk %q: want a power of two from 4K to 1G, like 64K or 512K", o.chunk)
	}
	if level != md.LevelRAID1 {
		cfg.Chunk = int(chunk)
	}
	if o.bitmap && level == md.LevelRAID0 {
		return usagef("--bitmap: raid0 has no redundancy for a bitmap to protect")
	}
	if o.spares < 0 || o.spares > 0 && level == md.LevelRAID0 {
		return usagef("--spares %d: want 0 or more, and none for raid0 (no redundancy to rebuild)", o.spares)
	}
	paths := fs.Args()
	least := minMembers[level][0]
	if o.force {
		least = minMembers[level][1]
	}
	if active := len(paths) - o.spares; active < least {
		return usagef("raid%d needs at least %d active members, %d given (%d members, %d spares)",
			level, least, max(active, 0), len(paths), o.spares)
	}
	if err := distinct(paths); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	m, err := openMembers(paths, block.FileOptions{})
	if err != nil {
		return err
	}
	defer m.close()
	unit := int64(cfg.Chunk)
	if level == md.LevelRAID1 {
		unit = 64 << 10 // md rounds raid1 members to 64 KiB
	}
	need := int64(array.DefaultDataOffset) + unit
	var smallest, largest int64
	var wipe []*block.File // members with a signature --force lets us overwrite
	for i, d := range m.files {
		if d.Size() < need {
			return fmt.Errorf("%s: %d bytes, too small: a member needs %d (1 MiB of metadata, then one %d-byte chunk)",
				paths[i], d.Size(), need, unit)
		}
		what, err := signature(d)
		if err != nil {
			return fmt.Errorf("%s: %w", paths[i], err)
		}
		if what != "" && !o.force {
			return fmt.Errorf("%s holds %s; nothing written (--force overwrites it)", paths[i], what)
		}
		if what != "" {
			wipe = append(wipe, d)
		}
		if smallest == 0 || d.Size() < smallest {
			smallest = d.Size()
		}
		largest = max(largest, d.Size())
	}
	if usable := func(n int64) int64 { return (n - array.DefaultDataOffset) / unit }; usable(smallest) != usable(largest) {
		fmt.Fprintf(stderr, "warning: members differ in size; each contributes %d bytes, the smallest one's share\n",
			usable(smallest)*unit)
	}

	for _, d := range wipe {
		if err := wipeSignatures(d); err != nil {
			return err
		}
	}
	a, err := array.Create(m.devices(), cfg)
	if err != nil {
		return err
	}
	started := time.Now()
	if !a.InSync() {
		fmt.Fprintf(stderr, "initial sync of %d bytes...\n", a.Size())
		if err := waitSync(ctx, a, stderr); err != nil {
			a.Close() // stops the sync; the superblocks stay dirty
			return fmt.Errorf("initial sync interrupted (%v): the array exists but is not in sync; it resyncs at its next assembly", err)
		}
		fmt.Fprintf(stderr, "initial sync done in %s\n", time.Since(started).Round(time.Millisecond))
	}
	if err := a.Close(); err != nil {
		return fmt.Errorf("closing the new array: %w", err)
	}
	uuid := a.UUID()
	fmt.Fprintf(stdout, "UUID:    %s\n", formatUUID(uuid))
	fmt.Fprintf(stdout, "Name:    %s\n", cfg.Name)
	fmt.Fprintf(stdout, "Level:   %s\n", describeGeometry(a))
	fmt.Fprintf(stdout, "Size:    %d bytes%s\n", a.Size(), humanSize(a.Size()))
	for i, p := range paths {
		role := fmt.Sprintf("active device %d", i)
		if i >= a.Disks() {
			role = "spare"
		}
		fmt.Fprintf(stdout, "Member:  %s (%s)\n", p, role)
	}
	state := "clean, in sync"
	if o.assumeClean {
		state = "clean, assumed in sync (--assume-clean)"
	}
	fmt.Fprintf(stdout, "State:   %s\n", state)
	return nil
}

// parseFlags parses args with fs; a bad flag is a usage error (exit 2), which fs has explained already.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil && !errors.Is(err, flag.ErrHelp) {
		return usagef("%v", err)
	} else if err != nil {
		return err
	}
	return nil
}

func chunkSet(fs *flag.FlagSet) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "chunk" })
	return set
}

// parseLevel reads a RAID level as mdadm does: "5", "raid5", and the aliases stripe and mirror.
func parseLevel(s string) (int, error) {
	switch strings.ToLower(s) {
	case "0", "raid0", "stripe":
		return md.LevelRAID0, nil
	case "1", "raid1", "mirror":
		return md.LevelRAID1, nil
	case "5", "raid5":
		return md.LevelRAID5, nil
	case "6", "raid6":
		return md.LevelRAID6, nil
	case "10", "raid10":
		return md.LevelRAID10, nil
	case "":
		return 0, usagef("--level is required: 0, 1, 5, 6 or 10")
	}
	return 0, usagef("--level %q: want 0, 1, 5, 6 or 10 (raid0, raid1, raid5, raid6, raid10)", s)
}

// setName makes md's set_name from NAME the way mdadm does by default: "HOSTNAME:NAME", or NAME alone when
// it names its host already ("host:name") or when the host part would not fit md's 32 bytes.
func setName(name string) (string, error) {
	if name == "" {
		return "", usagef("--name is required")
	}
	host, bare, hasHost := strings.Cut(name, ":")
	if !hasHost {
		bare = host
	}
	for _, part := range []string{host, bare} {
		if part == "" || strings.ContainsFunc(part, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
		}) {
			return "", usagef("--name %q: want NAME or HOST:NAME of letters, digits, '.', '_' and '-'", name)
		}
	}
	if len(name) > 32 {
		return "", usagef("--name %q: at most 32 bytes (md's set_name)", name)
	}
	if hasHost {
		return name, nil
	}
	if h := hostName(); h != "" && len(h)+1+len(name) <= 32 {
		return h + ":" + name, nil
	}
	return name, nil
}

// hostName is md's homehost: the host name up to the first dot, as mdadm writes it.
func hostName() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	h, _, _ = strings.Cut(h, ".")
	return h
}

// distinct refuses the same member twice, also under another name (a symlink, a second device node).
func distinct(paths []string) error {
	type id struct{ dev, ino, rdev uint64 }
	seen := map[id]string{}
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("%s: no such file or device", p)
			}
			return fmt.Errorf("%s: %w", p, err)
		}
		k := id{dev: uint64(st.Dev), ino: st.Ino}
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			k = id{rdev: uint64(st.Rdev)}
		}
		if prev, ok := seen[k]; ok {
			return usagef("%s and %s are the same member", prev, p)
		}
		seen[k] = p
	}
	return nil
}

// members are the opened member disks of one command, each held exclusively for its duration.
type members struct {
	files  []*block.File
	claims []*os.File
}

// openMembers claims and opens paths read-write.
func openMembers(paths []string, opts block.FileOptions) (*members, error) {
	m := &members{}
	for _, p := range paths {
		c, err := claim(p)
		if err != nil {
			m.close()
			return nil, err
		}
		m.claims = append(m.claims, c)
		f, err := block.OpenFile(p, opts)
		if err != nil {
			m.close()
			return nil, err
		}
		m.files = append(m.files, f)
	}
	return m, nil
}

func (m *members) devices() []block.Device {
	d := make([]block.Device, len(m.files))
	for i, f := range m.files {
		d[i] = f
	}
	return d
}

func (m *members) close() error {
	var errs []error
	for _, f := range m.files {
		errs = append(errs, f.Close())
	}
	for _, c := range m.claims {
		c.Close()
	}
	m.files, m.claims = nil, nil
	return errors.Join(errs...)
}

// claim keeps other users off a member while we write it. A block device is opened O_EXCL: the kernel
// refuses that while it is mounted or in a running md array, and refuses those while we hold it. A file
// gets an exclusive flock, which every gatewayd command takes too.
func claim(path string) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&os.ModeDevice != 0 {
		f, err := os.OpenFile(path, os.O_RDONLY|unix.O_EXCL, 0)
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("%s is in use (mounted, or a member of a running md array)", path)
		}
		return f, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use (locked by another gatewayd command or backing)", path)
		}
		return nil, fmt.Errorf("%s: flock: %w", path, err)
	}
	return f, nil
}

// signature names what d already holds that create would destroy: an md superblock of any version, a
// partition table, an ext2/3/4 or XFS filesystem, an LVM physical volume. "" when none is found.
func signature(d block.Device) (string, error) {
	size := d.Size()
	head := make([]byte, min(8192, size))
	if _, err := d.ReadAt(head, 0); err != nil {
		return "", err
	}
	mdMagic := binary.LittleEndian.AppendUint32(nil, md.SuperblockMagic)
	at := func(b []byte, off int, sig []byte) bool {
		return len(b) >= off+len(sig) && bytes.Equal(b[off:off+len(sig)], sig)
	}
	switch {
	case at(head, 4096, mdMagic):
		return "an md v1.2 superblock", nil
	case at(head, 0, mdMagic):
		return "an md v1.1 superblock", nil
	case at(head, 512, []byte("EFI PART")):
		return "a GPT partition table", nil
	case at(head, 512, []byte("LABELONE")), at(head, 1024, []byte("LABELONE")):
		return "an LVM physical volume label", nil
	case at(head, 1080, []byte{0x53, 0xef}):
		return "an ext2/3/4 filesystem", nil
	case at(head, 0, []byte("XFSB")):
		return "an XFS filesystem", nil
	case at(head, 510, []byte{0x55, 0xaa}):
		return "a partition table or boot sector (0x55aa at byte 510)", nil
	}
	for _, old := range oldSupers(size) {
		b := make([]byte, 512)
		if _, err := d.ReadAt(b, old.off); err != nil {
			return "", err
		}
		if at(b, 0, mdMagic) {
			return old.what, nil
		}
	}
	return "", nil
}

// wipeSignatures zeroes what signature looks at outside the array's data: the 4 KiB before the v1.2
// superblock (partition tables, filesystem and LVM labels, a v1.1 superblock) and old v1.0 and v0.90
// superblocks near the end, so that no tool finds them beside the new array.
func wipeSignatures(d block.Device) error {
	zero := make([]byte, 4096)
	if _, err := d.WriteAt(zero, 0); err != nil {
		return err
	}
	for _, old := range oldSupers(d.Size()) {
		b := make([]byte, 512)
		if _, err := d.ReadAt(b, old.off); err != nil {
			return err
		}
		if binary.LittleEndian.Uint32(b) == md.SuperblockMagic {
			if _, err := d.WriteAt(zero, old.off); err != nil {
				return err
			}
		}
	}
	return d.Flush()
}

type oldSuper struct {
	off  int64 // bytes
	what string
}

// oldSupers are where md v1.0 (8-12 KiB before the end, 4 KiB aligned) and v0.90 (the last 64 KiB-aligned
// 64 KiB) superblocks sit on a device of size bytes.
func oldSupers(size int64) []oldSuper {
	var out []oldSuper
	for _, s := range []oldSuper{
		{(size/512 - 16) &^ 7 * 512, "an md v1.0 superblock"},
		{size&^(64<<10-1) - 64<<10, "an md v0.90 superblock"},
	} {
		if s.off >= 8192 && s.off+4096 <= size {
			out = append(out, s)
		}
	}
	return out
}

// waitSync waits for the background work (a resync, a rebuild onto a spare), reporting its progress on
// w every few seconds. It returns ctx's error when ctx ends first; the work goes on until the array is
// closed.
func waitSync(ctx context.Context, a *array.Array, w io.Writer) error {
	done := make(chan struct{})
	go func() { a.WaitSync(); close(done) }()
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	started := time.Now()
	for {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if st := a.Status(); st.Total > 0 {
				fmt.Fprintf(w, "%s: %d%% (%d of %d MiB per member), %s\n", st.Action, st.Done*100/st.Total,
					st.Done>>20, st.Total>>20, time.Since(started).Round(time.Second))
			}
		}
	}
}

// unitName says what Check and Repair count in: a stripe is one chunk on every member.
func unitName(a *array.Array) string {
	switch a.Level() {
	case md.LevelRAID5, md.LevelRAID6:
		return fmt.Sprintf("stripes of %s chunks", kib(a.Chunk()))
	case md.LevelRAID10:
		return fmt.Sprintf("%s chunks", kib(a.Chunk()))
	}
	return fmt.Sprintf("%s blocks", kib(a.Chunk()))
}

func kib(n int64) string { return fmt.Sprintf("%d KiB", n>>10) }

func describeGeometry(a *array.Array) string {
	s := fmt.Sprintf("raid%d, %d members", a.Level(), a.Disks())
	switch n := len(a.Status().Members) - a.Disks(); {
	case n == 1:
		s += " and a spare"
	case n > 1:
		s += fmt.Sprintf(" and %d spares", n)
	}
	switch a.Level() {
	case md.LevelRAID5, md.LevelRAID6:
		s += ", left-symmetric, chunk " + kib(a.Chunk())
	case md.LevelRAID10:
		s += ", near=2, chunk " + kib(a.Chunk())
	case md.LevelRAID0:
		s += ", chunk " + kib(a.Chunk())
	}
	return s
}

func formatUUID(u [16]byte) string {
	return fmt.Sprintf("%x:%x:%x:%x", u[0:4], u[4:8], u[8:12], u[12:16])
}

const checkUsage = `usage: gatewayd array check [--repair] MEMBER...

Assembles the array from its MEMBERs, lets a pending resync or rebuild finish, then reads the whole array
and counts the units whose redundancy disagrees with their data: stripes (RAID5/6: one chunk on every
member), chunks (RAID10) or 64 KiB blocks (RAID1), as the count "mismatches: N" says. Without --repair it
changes no data; with it, it rewrites the redundancy of each mismatched unit from the data (parity
recomputed, the first copy copied over the others), as md's repair. On a degraded array the units that
lack their redundancy are not checked. Exit status 0 with no mismatch, 1 with any, repaired or not (or on
an error). The array is stopped cleanly afterwards.

flags:
`

func runArrayCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("array check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, checkUsage); fs.PrintDefaults() }
	repair := fs.Bool("repair", false, "rewrite the redundancy where it disagrees with the data")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("give the members of one array")
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, warnings, err := assemble(fs.Args(), block.FileOptions{})
	if err != nil {
		return err
	}
	defer a.Close()
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	fmt.Fprintf(stdout, "array %s: %s, %d bytes\n", formatUUID(a.UUID()), describeGeometry(a.Array), a.Size())
	if st := a.Status(); st.Action != array.ActionIdle {
		what := map[string]string{array.ActionResync: "resync (the array was not stopped cleanly)",
			array.ActionRecover: "rebuild onto the spare"}[st.Action]
		fmt.Fprintf(stderr, "waiting for the %s to finish first...\n", cmp.Or(what, st.Action))
	}
	if err := waitSync(ctx, a.Array, stderr); err != nil {
		return fmt.Errorf("interrupted (%v) before the check; the resync or rebuild resumes at the next assembly", err)
	}
	if a.Degraded() > 0 && a.Level() != md.LevelRAID0 {
		fmt.Fprintln(stderr, "warning: degraded: units without their full redundancy are not checked")
	}
	scrub, verb := a.Check, "found"
	if *repair {
		scrub, verb = a.Repair, "found and repaired"
	}
	mismatches, err := scrub()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mismatches: %d (%s)\n", mismatches, unitName(a.Array))
	if err := a.Close(); err != nil {
		return fmt.Errorf("stopping the array: %w", err)
	}
	if mismatches > 0 {
		return fmt.Errorf("%s %d mismatches", verb, mismatches)
	}
	return nil
}

// mdArray is an array assembled from members given on the command line, a block.Device whose Close stops
// the array (superblocks clean when in sync) and then releases the members.
type mdArray struct {
	*array.Array
	members *members
}

func (m *mdArray) Close() error {
	if m.members == nil {
		return nil
	}
	err := m.Array.Close()
	m.members.close()
	m.members = nil
	return err
}

// assemble opens paths and starts the one array they are members of. It refuses paths that are not md
// members or that belong to several arrays; warnings name the members left out and a degraded start.
func assemble(paths []string, opts block.FileOptions) (*mdArray, []string, error) {
	if err := distinct(paths); err != nil {
		return nil, nil, err
	}
	m, err := openMembers(paths, opts)
	if err != nil {
		return nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			m.close()
		}
	}()
	sets := map[[16]byte]*array.Set{}
	var order []*array.Set
	where := map[*array.Found]string{}
	for i, d := range m.files {
		f, err := array.Examine(d)
		if errors.Is(err, array.ErrNoMembers) {
			return nil, nil, fmt.Errorf("%s: no md superblock: not an array member", paths[i])
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", paths[i], err)
		}
		where[f] = paths[i]
		s := sets[f.Super.SetUUID]
		if s == nil {
			s = &array.Set{UUID: f.Super.SetUUID}
			sets[s.UUID] = s
			order = append(order, s)
		}
		s.Members = append(s.Members, f)
	}
	if len(order) > 1 {
		var desc []string
		for _, s := range order {
			var ps []string
			for _, f := range s.Members {
				ps = append(ps, where[f])
			}
			desc = append(desc, fmt.Sprintf("%s (%q): %s", formatUUID(s.UUID), s.Members[0].Super.SetName, strings.Join(ps, ", ")))
		}
		return nil, nil, fmt.Errorf("%w: %s", array.ErrSeveralSets, strings.Join(desc, "; "))
	}
	set := order[0]
	var warnings []string
	newest := set.Members[0]
	for _, f := range set.Members {
		if f.Super.Events > newest.Super.Events {
			newest = f
		}
	}
	for _, f := range set.Members {
		if f.Super.Events < newest.Super.Events {
			warnings = append(warnings, fmt.Sprintf("%s is stale (events %d, the array is at %d): left out and marked faulty",
				where[f], f.Super.Events, newest.Super.Events))
			continue
		}
		s := newest.Super
		if role := f.Super.DevNumber; int(role) < len(s.DevRoles) && s.DevRoles[role] >= uint16(s.RaidDisks) && s.DevRoles[role] != md.RoleSpare {
			warnings = append(warnings, fmt.Sprintf("%s is %s: left out", where[f], roleName(s.DevRoles[role], s.RaidDisks)))
		}
	}
	a, err := array.AssembleSet(set, array.AssembleConfig{})
	if err != nil {
		return nil, nil, fmt.Errorf("assembling %s from %d members: %w", formatUUID(set.UUID), len(paths), err)
	}
	if a.Degraded() > 0 {
		var slots []string
		for _, ms := range a.Status().Members {
			if ms.Slot >= 0 && ms.State != "in_sync" {
				slots = append(slots, fmt.Sprintf("slot %d %s", ms.Slot, ms.State))
			}
		}
		warnings = append(warnings, "running degraded: "+strings.Join(slots, ", "))
	}
	ok = true
	return &mdArray{Array: a, members: m}, warnings, nil
}
