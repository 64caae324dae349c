package array

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"opensan/gateway/block"
	"opensan/raid/md"
)

// eventMargin is how far behind the newest superblock a member's events may be and the member still count
// as current, as mdadm allows: superblocks go to the members one after another, so a crash can leave one
// update on some members only. Roles always come from the newest superblock, so a member failed by that
// update is still left out.
const eventMargin = 1

// Found is one member's superblock as read by Examine.
type Found struct {
	Dev    block.Device
	Super  *md.Superblock
	Bitmap *md.BitmapSuper // nil without an internal bitmap
}

// Examine reads the v1.2 superblock (and bitmap superblock) of dev. It returns md's errors for a
// superblock it cannot use (*md.FieldError), and ErrNoMembers wrapped when there is no md magic.
func Examine(dev block.Device) (*Found, error) {
	buf := make([]byte, 4096)
	if dev.Size() < 3*4096 {
		return nil, fmt.Errorf("%w: device of %d bytes", ErrNoMembers, dev.Size())
	}
	if _, err := dev.ReadAt(buf, superOffsetBytes); err != nil {
		return nil, err
	}
	sb, err := md.Decode(buf)
	if err != nil {
		if errors.Is(err, md.ErrMagic) {
			return nil, fmt.Errorf("%w: %v", ErrNoMembers, err)
		}
		return nil, err
	}
	if err := sb.Validate(); err != nil {
		return nil, err
	}
	f := &Found{Dev: dev, Super: sb}
	if sb.FeatureMap&md.FeatureBitmapOffset != 0 {
		bbuf := make([]byte, 4096)
		if _, err := dev.ReadAt(bbuf, superOffsetBytes+int64(sb.BitmapOffset)*md.SectorSize); err != nil {
			return nil, err
		}
		if f.Bitmap, err = md.DecodeBitmap(bbuf); err != nil {
			return nil, err
		}
		if f.Bitmap.UUID != sb.SetUUID {
			return nil, &md.FieldError{Struct: "bitmap", Field: "uuid", Offset: 8, Err: md.ErrInvalid, Detail: "differs from the superblock's set_uuid"}
		}
	}
	return f, nil
}

// Set is the members of one array found among many devices.
type Set struct {
	UUID    [16]byte
	Members []*Found
}

// Scan examines devs and groups those with an md superblock by set UUID. Devices without md magic are
// skipped; other errors are returned per device in errs.
func Scan(devs []block.Device) (sets []*Set, errs []error) {
	byUUID := map[[16]byte]*Set{}
	for i, d := range devs {
		f, err := Examine(d)
		if err != nil {
			if !errors.Is(err, ErrNoMembers) {
				errs = append(errs, fmt.Errorf("device %d: %w", i, err))
			}
			continue
		}
		s := byUUID[f.Super.SetUUID]
		if s == nil {
			s = &Set{UUID: f.Super.SetUUID}
			byUUID[s.UUID] = s
			sets = append(sets, s)
		}
		s.Members = append(s.Members, f)
	}
	return sets, errs
}

// AssembleConfig tunes Assemble.
type AssembleConfig struct {
	Now         func() time.Time
	BitmapDelay time.Duration // how long a bitmap bit stays set after its last write; daemon_sleep when 0
	// Force starts a dirty degraded RAID5/6 anyway (mdadm --force): regions being written at the crash
	// may hold stale parity, so the missing member's data there may read back wrong.
	Force bool
	// SyncRate bounds the background resync and rebuilds.
	SyncRate SyncRate
}

// readUnaligned reads len(p) bytes at off from d, going through whole logical blocks.
func readUnaligned(d block.Device, p []byte, off int64) error {
	bs := int64(d.LogicalBlockSize())
	start := off / bs * bs
	end := (off + int64(len(p)) + bs - 1) / bs * bs
	buf := make([]byte, end-start)
	if _, err := d.ReadAt(buf, start); err != nil {
		return err
	}
	copy(p, buf[off-start:])
	return nil
}

// Assemble starts the array whose members are devs (all of one set). The member with the most events
// defines the array; members with fewer events are stale and left out (their slots count as missing) and
// so are spares and members the newest superblock marks faulty. A dirty array resyncs in the background;
// a dirty degraded RAID5/6 is refused (ErrDirtyDegraded), as md does.
func Assemble(devs []block.Device, cfg AssembleConfig) (*Array, error) {
	sets, errs := Scan(devs)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(sets) == 0 {
		return nil, ErrNoMembers
	}
	if len(sets) > 1 {
		return nil, fmt.Errorf("%w: %d set UUIDs", ErrSeveralSets, len(sets))
	}
	return AssembleSet(sets[0], cfg)
}

// AssembleSet starts the array from the members of one Set.
func AssembleSet(set *Set, cfg AssembleConfig) (*Array, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// The newest superblock defines the array; among equals an in-sync active member's, since only those
	// carry current bitmap bits (md reads the bitmap from in-sync members only).
	active := func(f *Found) bool {
		s := f.Super
		return int(s.DevNumber) < len(s.DevRoles) && s.DevRoles[s.DevNumber] < uint16(s.RaidDisks) &&
			s.FeatureMap&md.FeatureRecoveryOffset == 0
	}
	newest := set.Members[0]
	for _, f := range set.Members[1:] {
		if f.Super.Events > newest.Super.Events || f.Super.Events == newest.Super.Events && active(f) && !active(newest) {
			newest = f
		}
	}
	a := &Array{sb: *newest.Super, now: cfg.Now}
	a.SetSyncRate(cfg.SyncRate)
	a.sb.DevRoles = append([]uint16(nil), newest.Super.DevRoles...)
	if err := a.setup(); err != nil {
		return nil, err
	}
	if newest.Bitmap != nil {
		bm := *newest.Bitmap
		// A stale bitmap (flagged, or older than the superblock) cannot tell where writes were: every bit
		// counts as set, and it is written back current.
		stale := bm.State&md.BitmapStateStale != 0 || bm.Events < newest.Super.Events
		bm.State &^= md.BitmapStateStale
		a.bitmap = &bm
		syncSpace := a.memberSize
		if a.level == md.LevelRAID10 {
			syncSpace = a.size
		}
		if int64(bm.SyncSize)*md.SectorSize < syncSpace {
			return nil, &md.FieldError{Struct: "bitmap", Field: "sync_size", Offset: 40, Err: md.ErrInvalid,
				Detail: fmt.Sprintf("%d sectors do not cover the %d bytes the array syncs", bm.SyncSize, syncSpace)}
		}
		a.intent = newIntent(bm, cfg.BitmapDelay)
		bits := make([]byte, len(a.intent.bits))
		off := superOffsetBytes + int64(newest.Super.BitmapOffset)*md.SectorSize + md.BitmapSuperSize
		if len(bits) > 0 {
			if err := readUnaligned(newest.Dev, bits, off); err != nil {
				return nil, err
			}
		}
		if a.sb.ResyncOffset != md.ResyncClean && !stale {
			a.needBits = make([]bool, a.intent.nbits)
		}
		for b := range a.intent.nbits {
			if md.BitSet(bits, uint64(b)) || stale {
				md.SetBit(a.intent.bits, uint64(b), true)
				a.intent.onDisk[b].Store(true)
				if a.needBits != nil {
					a.needBits[b] = true
				}
			}
		}
	}
	a.slots = make([]atomic.Pointer[member], a.n)
	var stale []*Found
	for _, f := range set.Members {
		s := f.Super
		if s.Events+eventMargin < newest.Super.Events {
			stale = append(stale, f)
			continue
		}
		if s.Level != a.sb.Level || s.RaidDisks != a.sb.RaidDisks || s.ChunkSize != a.sb.ChunkSize || s.Layout != a.sb.Layout ||
			s.Size != a.sb.Size || s.DataOffset != a.sb.DataOffset {
			return nil, fmt.Errorf("array: member %d disagrees with the newest superblock on geometry at equal events", s.DevNumber)
		}
		if int64(s.DataOffset)*md.SectorSize+a.memberSize > f.Dev.Size() {
			return nil, fmt.Errorf("array: member %d: %d bytes, too small for the array", s.DevNumber, f.Dev.Size())
		}
		if int(s.DevNumber) >= len(a.sb.DevRoles) {
			continue
		}
		role := a.sb.DevRoles[s.DevNumber] // the newest view of this member's role
		if role == md.RoleSpare {
			a.spares = append(a.spares, newMember(f.Dev, s.DevNumber, s.DeviceUUID, -1))
			continue
		}
		if role >= uint16(a.n) {
			continue // faulty or journal in the newest superblock
		}
		if a.slot(int(role)) != nil {
			return nil, fmt.Errorf("array: two members claim slot %d", role)
		}
		m := newMember(f.Dev, s.DevNumber, s.DeviceUUID, int(role))
		if s.FeatureMap&md.FeatureRecoveryOffset != 0 {
			// Partly rebuilt: valid below the recovery offset; the rebuild resumes from there.
			rows := min(int64(s.RecoveryOffset)*md.SectorSize/a.chunk, a.rows())
			m.recovered.Store(rows)
			m.checkpoint = rows
		}
		a.slots[role].Store(m)
	}
	if a.tooDegraded() {
		return nil, fmt.Errorf("%w: %d of %d members present", ErrTooDegraded, a.n-a.Degraded(), a.n)
	}
	if a.level == md.LevelRAID0 {
		// md's raid0 ignores size and stripes over each member's whole data_size: equal members only.
		var sizes []int64
		for _, f := range set.Members {
			sizes = append(sizes, int64(f.Super.DataSize)*md.SectorSize/a.chunk*a.chunk)
		}
		for _, sz := range sizes[1:] {
			if sz != sizes[0] {
				return nil, &md.FieldError{Struct: "superblock", Field: "data_size", Offset: 0x088, Err: md.ErrUnsupported,
					Detail: "raid0 members of unequal size (multi-zone layout)"}
			}
		}
		a.memberSize = sizes[0]
		a.size = layoutSize(a.level, a.n, a.memberSize, a.chunk)
	}
	if a.sb.ResyncOffset != md.ResyncClean && a.Degraded() > 0 && (a.level == md.LevelRAID5 || a.level == md.LevelRAID6) {
		if !cfg.Force {
			return nil, ErrDirtyDegraded
		}
		a.sb.ResyncOffset = md.ResyncClean // nothing to resync from; take the parity as it is
		a.needBits = nil
	}
	// Stale members get marked faulty so no assembly (ours or mdadm's) takes them back as in sync.
	a.meta.Lock()
	for _, f := range stale {
		if int(f.Super.DevNumber) < len(a.sb.DevRoles) && a.sb.DevRoles[f.Super.DevNumber] < uint16(a.n) {
			role := a.sb.DevRoles[f.Super.DevNumber]
			if a.slot(int(role)) == nil {
				a.sb.DevRoles[f.Super.DevNumber] = md.RoleFaulty
			}
		}
	}
	for i := range a.slots {
		if a.slot(i) == nil {
			for d, r := range a.sb.DevRoles {
				if int(r) == i {
					a.sb.DevRoles[d] = md.RoleFaulty
				}
			}
		}
	}
	a.sb.Events++
	a.events.Store(a.sb.Events)
	err := a.writeSuperblocksLocked()
	a.meta.Unlock()
	if err != nil {
		return nil, err
	}
	a.start()
	return a, nil
}

// Stale lists, after Scan, the members of set whose events are behind the newest.
func (s *Set) Stale() []*Found {
	var newest uint64
	for _, f := range s.Members {
		newest = max(newest, f.Super.Events)
	}
	var out []*Found
	for _, f := range s.Members {
		if f.Super.Events+eventMargin < newest {
			out = append(out, f)
		}
	}
	return out
}
