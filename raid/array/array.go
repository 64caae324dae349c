// Package array runs md arrays in user space: RAID 0, 1, 10 (near-2), 5 and 6 (left-symmetric) over member
// block devices, with Linux md's v1.2 superblocks (package md) and data layouts (package layout), so a Linux
// box assembles the same members with stock mdadm. An Array is itself a block.Device.
//
// Locking: the data path takes only per-stripe locks (a fixed table of mutexes indexed by stripe number);
// superblock updates (member failure, dirty/clean) take a separate metadata lock.
package array

import (
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"opensan/gateway/block"
	"opensan/raid/md"
	"opensan/raid/parity"
)

var (
	_ block.Device    = (*Array)(nil)
	_ block.FUAWriter = (*Array)(nil)
)

// Defaults for Create.
const (
	DefaultChunk      = 512 << 10 // bytes, mdadm's default
	DefaultDataOffset = 1 << 20   // bytes: room for the superblock (4 KiB), the bitmap (8 KiB on) and slack
	superOffsetBytes  = md.SuperOffsetV12 * md.SectorSize
	bitmapOffsetSect  = 8        // sectors from the superblock to the bitmap, as mdadm
	minBitmapChunk    = 64 << 20 // bytes per bitmap bit, mdadm's default floor for internal bitmaps
	stripeLocks       = 1024     // size of the stripe lock table
	bufClasses        = 30       // buffer pools: 4 KiB to 2 TiB, past the largest chunk md can describe (1 TiB)
)

// Errors.
var (
	ErrFailed        = errors.New("array: too many members failed; the array is down")
	ErrNoMembers     = errors.New("array: no md members found")
	ErrSeveralSets   = errors.New("array: members of several arrays given")
	ErrTooDegraded   = errors.New("array: too many members missing to start")
	ErrDirtyDegraded = errors.New("array: unclean shutdown of a degraded parity array; data may be lost")
	ErrSpare         = errors.New("array: member is a spare or faulty")
)

// CreateConfig describes a new array.
type CreateConfig struct {
	Level  int    // md.LevelRAID0, 1, 5, 6 or 10
	Chunk  int    // bytes per chunk, a power of two >= 4 KiB; DefaultChunk when 0; ignored for RAID1
	Name   string // set_name, "homehost:name", at most 32 bytes; unique per appliance
	Bitmap bool   // internal write-intent bitmap (not for RAID0)
	// BitmapChunk is the bytes each bitmap bit covers, a power of two; 0 picks 64 MiB or more so the
	// bitmap fits before the data offset.
	BitmapChunk int64
	// BitmapDelay is how long a bit stays set after its last write (md's daemon_sleep); 5 s when 0.
	BitmapDelay time.Duration
	// DataOffset is where data starts on each member, in bytes; DefaultDataOffset when 0.
	DataOffset int64
	// AssumeClean skips the initial sync: only for members known to be zero-filled (parity of zeros is 0).
	AssumeClean bool
	// Spares is how many of the members, the last ones, are hot spares rather than active.
	Spares int
	// SyncRate bounds the background sync and rebuilds.
	SyncRate SyncRate
	Now      func() time.Time // clock; time.Now when nil
	Rand     io.Reader        // UUID source; crypto/rand when nil
}

// member is one disk of the array: in a slot, or a hot spare.
type member struct {
	dev        block.Device
	devNumber  uint32
	deviceUUID [16]byte
	role       int // slot, or -1 for a spare
	faulty     atomic.Bool
	// recovered is the number of rows (member chunks from the data offset) holding valid data: inSyncRows
	// for a member in sync, less while a rebuild fills it. The data path uses the member only below it.
	recovered atomic.Int64
	// checkpoint is the part of recovered known durable on the member: what its superblock's
	// recovery_offset says. Only the rebuild and superblock writes (under meta) touch it.
	checkpoint int64
}

// inSyncRows marks a member in sync (no recovery_offset).
const inSyncRows = math.MaxInt64

func newMember(dev block.Device, devNumber uint32, uuid [16]byte, role int) *member {
	m := &member{dev: dev, devNumber: devNumber, deviceUUID: uuid, role: role, checkpoint: inSyncRows}
	m.recovered.Store(inSyncRows)
	return m
}

// inSync reports whether the member is working and fully rebuilt.
func (m *member) inSync() bool {
	return m != nil && !m.faulty.Load() && m.recovered.Load() == inSyncRows
}

// Array is a running md array.
type Array struct {
	level      int
	n          int   // raid_disks
	chunk      int64 // bytes; for RAID1 the unit of locking only
	dataOffset int64 // bytes
	memberSize int64 // bytes of each member used (superblock size field)
	size       int64 // bytes of array
	bs         int
	dataDisks  int // members carrying data in a stripe (RAID5/6), or n
	coder      *parity.Coder

	slots  []atomic.Pointer[member] // by role; nil when missing. Replaced (under meta) when a spare takes a slot.
	spares []*member                // hot spares, under meta

	locks [stripeLocks]sync.Mutex
	bufs  [bufClasses]sync.Pool // *[]byte of 4 KiB << class bytes: stripe buffers

	// syncedStripes: stripes below it are known in sync (parity or mirrors); writes above use
	// reconstruct-write. Equal to stripes() when the array is in sync.
	syncedStripes atomic.Int64
	resynced      atomic.Int64  // units rewritten by resyncs of this run
	resyncStop    chan struct{} // closed by Close: background work stops
	resyncDone    chan struct{} // closed when the sync worker has returned
	work          workState     // the sync worker's state, for WaitSync and kicks
	rateMin       atomic.Int64  // SyncRate.Min
	rateMax       atomic.Int64  // SyncRate.Max
	mismatches    atomic.Int64  // found by the last scrub
	opNanos       atomic.Int64  // moving average of a member operation's duration, ns
	gathering     gathering     // partial-stripe writes of streams waiting for the rest of their stripe
	foreground    atomic.Int64  // I/Os started by users; background work slows down while it moves
	progress      progress      // what the sync worker is doing

	meta     sync.Mutex // superblock updates
	sb       md.Superblock
	events   atomic.Uint64   // sb.Events, readable without meta
	bitmap   *md.BitmapSuper // as found or created; the running state is intent
	intent   *intent
	needBits []bool // bits whose regions need the resync; nil: every region (when a resync runs)
	bmDelay  time.Duration
	dirty    atomic.Bool // superblocks say dirty (resync_offset 0)
	down     atomic.Bool
	closed   atomic.Bool
	now      func() time.Time
	metaErr  error // first error writing superblocks
}

// Level, Disks and the rest describe the array.
func (a *Array) Level() int            { return a.level }
func (a *Array) Disks() int            { return a.n }
func (a *Array) Chunk() int64          { return a.chunk }
func (a *Array) Size() int64           { return a.size }
func (a *Array) LogicalBlockSize() int { return a.bs }

// UUID is the array's set UUID.
func (a *Array) UUID() [16]byte { return a.sb.SetUUID }

// Events is the current event count.
func (a *Array) Events() uint64 {
	a.meta.Lock()
	defer a.meta.Unlock()
	return a.sb.Events
}

// Degraded is the number of slots without a working, fully rebuilt member.
func (a *Array) Degraded() int {
	d := 0
	for i := range a.slots {
		if !a.slot(i).inSync() {
			d++
		}
	}
	return d
}

// Faulty reports whether slot i has no working, fully rebuilt member.
func (a *Array) Faulty(i int) bool { return !a.slot(i).inSync() }

// slot returns the member in slot i, nil when there is none.
func (a *Array) slot(i int) *member { return a.slots[i].Load() }

// live returns the slot members that are not faulty (rebuilding ones included).
func (a *Array) live() []*member {
	out := make([]*member, 0, len(a.slots))
	for i := range a.slots {
		if m := a.slot(i); m != nil && !m.faulty.Load() {
			out = append(out, m)
		}
	}
	return out
}

func redundancy(level, n int) int {
	switch level {
	case md.LevelRAID1:
		return n - 1
	case md.LevelRAID5:
		return 1
	case md.LevelRAID6:
		return 2
	case md.LevelRAID10:
		return 1 // at least one failure; more survive when they hit different pairs
	}
	return 0
}

// Create writes md v1.2 superblocks (and a bitmap) on members, in slot order, and returns the running
// array. Unless cfg.AssumeClean, the initial sync runs in the background; the array is usable at once.
func Create(members []block.Device, cfg CreateConfig) (*Array, error) {
	if cfg.Spares < 0 || cfg.Spares >= len(members) {
		return nil, fmt.Errorf("array: %d spares of %d members: want at least one active member", cfg.Spares, len(members))
	}
	if cfg.Spares > 0 && cfg.Level == md.LevelRAID0 {
		return nil, fmt.Errorf("array: raid0 has no redundancy to rebuild onto a spare")
	}
	n := len(members) - cfg.Spares
	if cfg.Chunk == 0 {
		cfg.Chunk = DefaultChunk
	}
	if cfg.DataOffset == 0 {
		cfg.DataOffset = DefaultDataOffset
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	bs := 512
	minSize := int64(-1)
	for i, m := range members {
		bs = max(bs, m.LogicalBlockSize())
		if minSize < 0 || m.Size() < minSize {
			minSize = m.Size()
		}
		if m.Size() <= cfg.DataOffset {
			return nil, fmt.Errorf("array: member %d: %d bytes leave no room after the data offset %d", i, m.Size(), cfg.DataOffset)
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("array: create: no members")
	}
	if cfg.Chunk < 4096 || cfg.Chunk&(cfg.Chunk-1) != 0 {
		return nil, fmt.Errorf("array: chunk %d bytes: want a power of two of at least 4096", cfg.Chunk)
	}
	if cfg.DataOffset%int64(max(bs, 4096)) != 0 || cfg.DataOffset < 3*4096 {
		return nil, fmt.Errorf("array: data offset %d bytes: want a multiple of 4096 of at least 12288", cfg.DataOffset)
	}
	if cfg.BitmapChunk != 0 && (cfg.BitmapChunk < 512 || cfg.BitmapChunk&(cfg.BitmapChunk-1) != 0 || cfg.BitmapChunk > 1<<31) {
		return nil, fmt.Errorf("array: bitmap chunk %d bytes: want a power of two from 512 to 2 GiB", cfg.BitmapChunk)
	}
	if cfg.Bitmap && cfg.Level == md.LevelRAID0 {
		return nil, fmt.Errorf("array: raid0 has no redundancy to protect with a bitmap")
	}
	unit := int64(cfg.Chunk)
	chunkSectors := uint32(cfg.Chunk / md.SectorSize)
	layout := uint32(0)
	switch cfg.Level {
	case md.LevelRAID1:
		unit, chunkSectors = 64<<10, 0 // round member size to 64 KiB
	case md.LevelRAID5, md.LevelRAID6:
		layout = md.LayoutLeftSymmetric
	case md.LevelRAID10:
		layout = md.LayoutRAID10Near2
	}
	used := (minSize - cfg.DataOffset) / unit * unit
	if used == 0 {
		return nil, fmt.Errorf("array: members too small for one %d-byte chunk after the data offset", unit)
	}
	maxDev := md.DefaultMaxDev
	if len(members) > maxDev {
		maxDev = (len(members) + 127) / 128 * 128
	}
	sb := md.Superblock{
		SetName:      cfg.Name,
		CTime:        md.MakeTime(cfg.Now()),
		Level:        int32(cfg.Level),
		Layout:       layout,
		Size:         uint64(used / md.SectorSize),
		DataSize:     uint64((minSize - cfg.DataOffset) / md.SectorSize), // each member writes its own
		ChunkSize:    chunkSectors,
		RaidDisks:    uint32(n),
		DataOffset:   uint64(cfg.DataOffset / md.SectorSize),
		SuperOffset:  md.SuperOffsetV12,
		UTime:        md.MakeTime(cfg.Now()),
		Events:       1,
		ResyncOffset: 0, // a full sync is needed; set clean once it ran
		DevRoles:     make([]uint16, maxDev),
	}
	if cfg.AssumeClean || cfg.Level == md.LevelRAID0 {
		sb.ResyncOffset = md.ResyncClean
	}
	if _, err := io.ReadFull(cfg.Rand, sb.SetUUID[:]); err != nil {
		return nil, fmt.Errorf("array: uuid: %w", err)
	}
	for i := range sb.DevRoles {
		sb.DevRoles[i] = md.RoleSpare
		if i < n {
			sb.DevRoles[i] = uint16(i)
		}
	}
	if err := sb.Validate(); err != nil {
		return nil, fmt.Errorf("array: create: %w", err)
	}
	a := &Array{sb: sb, now: cfg.Now, bs: bs, bmDelay: cfg.BitmapDelay}
	a.SetSyncRate(cfg.SyncRate)
	if cfg.Bitmap {
		a.sb.FeatureMap |= md.FeatureBitmapOffset
		a.sb.BitmapOffset = bitmapOffsetSect
		syncSize := sb.Size
		if cfg.Level == md.LevelRAID10 {
			syncSize = uint64(layoutSize(cfg.Level, n, used, int64(cfg.Chunk)) / md.SectorSize)
		}
		room := cfg.DataOffset - superOffsetBytes - bitmapOffsetSect*md.SectorSize // bytes for bitmap sb + bits
		bm := &md.BitmapSuper{Version: md.BitmapVersion, UUID: sb.SetUUID, Events: sb.Events, SyncSize: syncSize,
			ChunkSize: uint32(cmp.Or(cfg.BitmapChunk, minBitmapChunk)), DaemonSleep: md.DefaultDaemonSleep, SectorsReserved: uint32(room / md.SectorSize)}
		for int64(bm.BitmapLen(bs)) > room {
			bm.ChunkSize *= 2
		}
		a.bitmap = bm
	}
	if err := a.setup(); err != nil {
		return nil, err
	}
	a.slots = make([]atomic.Pointer[member], n)
	for i, d := range members {
		var uuid [16]byte
		if _, err := io.ReadFull(cfg.Rand, uuid[:]); err != nil {
			return nil, fmt.Errorf("array: uuid: %w", err)
		}
		if i < n {
			a.slots[i].Store(newMember(d, uint32(i), uuid, i))
		} else {
			a.spares = append(a.spares, newMember(d, uint32(i), uuid, -1))
		}
	}
	if a.bitmap != nil {
		a.intent = newIntent(*a.bitmap, a.bmDelay)
		if a.sb.ResyncOffset != md.ResyncClean {
			// The initial sync is pending everywhere: every bit set, as mdadm writes a new bitmap.
			for b := range a.intent.nbits {
				md.SetBit(a.intent.bits, uint64(b), true)
				a.intent.onDisk[b].Store(true)
			}
		}
	}
	a.events.Store(a.sb.Events)
	a.meta.Lock()
	err := a.writeSuperblocksLocked()
	a.meta.Unlock()
	if err != nil {
		return nil, err
	}
	a.start()
	return a, nil
}

// layoutSize is the array size in bytes for n members of used bytes each.
func layoutSize(level, n int, used, chunk int64) int64 {
	switch level {
	case md.LevelRAID0:
		return int64(n) * used
	case md.LevelRAID1:
		return used
	case md.LevelRAID5:
		return int64(n-1) * used
	case md.LevelRAID6:
		return int64(n-2) * used
	case md.LevelRAID10:
		return (used / chunk) * int64(n) / 2 * chunk
	}
	return 0
}

// setup derives the geometry from a.sb.
func (a *Array) setup() error {
	s := &a.sb
	a.level, a.n = int(s.Level), int(s.RaidDisks)
	a.chunk = int64(s.ChunkSize) * md.SectorSize
	a.dataOffset = int64(s.DataOffset) * md.SectorSize
	a.memberSize = int64(s.Size) * md.SectorSize
	a.dataDisks = a.n
	var err error
	switch a.level {
	case md.LevelRAID1:
		a.chunk = 64 << 10
	case md.LevelRAID5:
		a.dataDisks = a.n - 1
		a.coder, err = parity.NewP(a.dataDisks)
	case md.LevelRAID6:
		a.dataDisks = a.n - 2
		a.coder, err = parity.NewPQ(a.dataDisks)
	}
	if err != nil {
		return err
	}
	if a.level != md.LevelRAID1 {
		a.memberSize = a.memberSize / a.chunk * a.chunk // md ignores a partial last chunk
	}
	a.size = layoutSize(a.level, a.n, a.memberSize, a.chunk)
	if a.bs == 0 {
		a.bs = 512
	}
	return nil
}

// stripes is the number of units of resync and locking: stripes (rows) for RAID5/6, array chunks for
// RAID10, 64 KiB blocks for RAID1.
func (a *Array) stripes() int64 {
	if a.level == md.LevelRAID10 {
		return a.size / a.chunk
	}
	return a.memberSize / a.chunk
}

// rows is the number of chunks (64 KiB blocks for RAID1) each member holds: the unit of rebuild.
func (a *Array) rows() int64 { return a.memberSize / a.chunk }

func (a *Array) start() {
	for _, m := range a.live() {
		a.bs = max(a.bs, m.dev.LogicalBlockSize())
	}
	a.resyncStop, a.resyncDone = make(chan struct{}), make(chan struct{})
	a.work.cond = sync.NewCond(&a.work.mu)
	a.work.busy = true
	if a.intent != nil {
		a.intent.stop, a.intent.done = make(chan struct{}), make(chan struct{})
		go a.bitmapDaemon()
	}
	if a.sb.ResyncOffset == md.ResyncClean {
		a.syncedStripes.Store(a.stripes())
	} else {
		a.dirty.Store(true)
	}
	go a.syncWorker()
}

// writeSuperblocksLocked writes the superblock (and the bitmap) to every working member and flushes them.
func (a *Array) writeSuperblocksLocked() error {
	a.sb.UTime = md.MakeTime(a.now())
	var errs []error
	for _, m := range append(a.live(), a.spares...) {
		if err := a.writeMemberSuper(m); err != nil {
			m.faulty.Store(true)
			errs = append(errs, err)
		}
	}
	a.dropFaultySpares()
	if len(errs) > 0 {
		// The failed members are out; record that on the survivors.
		return a.failedLocked(errs)
	}
	return nil
}

func (a *Array) writeMemberSuper(m *member) error {
	s := a.sb
	s.DevNumber, s.DeviceUUID = m.devNumber, m.deviceUUID
	if m.checkpoint != inSyncRows {
		// Partly rebuilt: md resumes the recovery from here (sectors of this member's data area).
		s.FeatureMap |= md.FeatureRecoveryOffset
		s.RecoveryOffset = uint64(m.checkpoint * a.chunk / md.SectorSize)
	}
	s.DataSize = uint64((m.dev.Size() - a.dataOffset) / md.SectorSize)
	if a.level == md.LevelRAID0 {
		// md's raid0 uses each member's whole data_size: unequal ones would make it a multi-zone array
		// laid out differently from ours.
		s.DataSize = uint64(a.memberSize / md.SectorSize)
	}
	b, err := md.Encode(&s, m.dev.LogicalBlockSize())
	if err != nil {
		return err
	}
	if _, err := m.dev.WriteAt(b, superOffsetBytes); err != nil {
		return err
	}
	if a.intent != nil {
		// The bitmap's events follow the superblock's, or md calls the bitmap stale and resyncs all.
		a.intent.mu.Lock()
		err = a.writeMemberBitmap(m, a.sb.Events)
		a.intent.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return m.dev.Flush()
}

// failedLocked records members that just failed: their roles become faulty on the survivors' superblocks,
// with events bumped. It returns ErrFailed when redundancy is gone.
func (a *Array) failedLocked(causes []error) error {
	for {
		for i := range a.slots {
			if m := a.slot(i); m != nil && m.faulty.Load() && int(m.devNumber) < len(a.sb.DevRoles) {
				a.sb.DevRoles[m.devNumber] = md.RoleFaulty
			}
		}
		if a.tooDegraded() {
			a.down.Store(true)
			return fmt.Errorf("%w: %v", ErrFailed, errors.Join(causes...))
		}
		a.sb.Events++
		a.events.Store(a.sb.Events)
		a.sb.UTime = md.MakeTime(a.now())
		again := false
		for _, m := range append(a.live(), a.spares...) {
			if err := a.writeMemberSuper(m); err != nil {
				m.faulty.Store(true)
				if m.role >= 0 {
					causes = append(causes, err)
					again = true
				}
			}
		}
		a.dropFaultySpares()
		if !again {
			a.kick() // a spare may take the failed member's place
			return nil
		}
	}
}

// tooDegraded reports whether the missing members lose data.
func (a *Array) tooDegraded() bool {
	switch a.level {
	case md.LevelRAID10:
		// Near-2: a chunk is lost when both members of a pair of adjacent slots are gone. With n even the
		// pairs are fixed; with n odd every adjacent pair (i, i+1 mod n) shares some chunk.
		for i := range a.n {
			if a.Faulty(i) && a.Faulty((i+1)%a.n) && (a.n%2 == 1 || i%2 == 0) {
				return true
			}
		}
		return false
	}
	return a.Degraded() > redundancy(a.level, a.n)
}

// fail marks m faulty after an I/O error and updates the survivors' superblocks. It returns nil while the
// array survives, so the caller retries its stripe degraded.
func (a *Array) fail(m *member, cause error) error {
	a.meta.Lock()
	defer a.meta.Unlock()
	if a.down.Load() {
		return fmt.Errorf("%w: %v", ErrFailed, cause)
	}
	if m.faulty.Swap(true) {
		return nil // someone else recorded it
	}
	return a.failedLocked([]error{cause})
}

// markDirty makes the superblocks say "dirty" before the first write after a clean state (md's
// resync_offset 0 with events bumped): a crash from now on leads to a resync, of the whole array or, with
// a bitmap, of the regions whose bits are set.
func (a *Array) markDirty() error {
	if a.dirty.Load() {
		return nil
	}
	a.meta.Lock()
	defer a.meta.Unlock()
	if a.dirty.Load() {
		return nil
	}
	if a.down.Load() {
		return ErrFailed
	}
	a.dirty.Store(true)
	a.sb.ResyncOffset = 0
	a.sb.Events++
	a.events.Store(a.sb.Events)
	return a.writeSuperblocksLocked()
}

// Close stops the array: it waits for the background sync (stopping it), flushes the members and, when
// the array is in sync, marks it clean. Close does not close the members.
func (a *Array) Close() error {
	if a.closed.Swap(true) {
		return nil
	}
	a.stopWorker()
	if a.intent != nil {
		close(a.intent.stop)
		<-a.intent.done
	}
	if a.down.Load() {
		return ErrFailed
	}
	if err := a.Flush(); err != nil {
		return err
	}
	if a.intent != nil {
		a.clearIdleBits(true) // flushes, then clears every bit of a synced region
	}
	a.meta.Lock()
	defer a.meta.Unlock()
	if !a.InSync() {
		return nil // stays dirty: the next assembly resyncs
	}
	a.dirty.Store(false)
	a.sb.ResyncOffset = md.ResyncClean
	a.sb.Events++
	a.events.Store(a.sb.Events)
	return a.writeSuperblocksLocked()
}

// Flush flushes every working member in parallel.
func (a *Array) Flush() error {
	if a.down.Load() {
		return ErrFailed
	}
	var wg sync.WaitGroup
	live := a.live()
	errs := make([]error, len(live))
	for i, m := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.dev.Flush()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			if ferr := a.fail(live[i], err); ferr != nil {
				return ferr
			}
		}
	}
	return nil
}
