package scsi

import (
	"crypto/sha256"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"

	"opensan/gateway/block"
)

// lu is one logical unit: a block device, its identity, its mode parameters and the tasks running on it.
type lu struct {
	lun      uint64
	dev      block.Device
	bs       int    // logical block size in bytes
	blocks   uint64 // capacity in logical blocks
	readOnly bool

	serial                    string
	vendor, product, revision string
	naa                       [8]byte // NAA locally assigned designator (VPD 0x83)

	// Mode parameters shared by every nexus (SPC-4 allows one set per logical unit).
	modeMu sync.Mutex
	wce    atomic.Bool // caching page WCE: true = write-back until SYNCHRONIZE CACHE; false = every write FUA
	swp    atomic.Bool // control page SWP: software write protect
	// stopped is set by START STOP UNIT with START=0: medium access then returns NOT READY.
	stopped atomic.Bool
	// sanitizing is set while a SANITIZE operation runs; sanitizeFailed after one failed (SBC-3 4.11).
	sanitizing, sanitizeFailed atomic.Bool
	// deallocated is set by a SANITIZE BLOCK ERASE and cleared by the next write: every block is then
	// known to be deallocated, which GET LBA STATUS reports.
	deallocated atomic.Bool

	tasks taskSet
	locks rangeLocks
	resv  resvState
}

func newLU(targetName string, lun uint64, cfg LUConfig) (*lu, error) {
	d := cfg.Device
	if d == nil {
		return nil, fmt.Errorf("scsi: LUN %d: no device", lun)
	}
	bs := d.LogicalBlockSize()
	if !block.ValidBlockSize(bs) {
		return nil, fmt.Errorf("scsi: LUN %d: logical block size %d not 512 or 4096", lun, bs)
	}
	if d.Size() <= 0 || d.Size()%int64(bs) != 0 {
		return nil, fmt.Errorf("scsi: LUN %d: size %d bytes not a positive multiple of %d", lun, d.Size(), bs)
	}
	l := &lu{
		lun: lun, dev: d, bs: bs, blocks: uint64(d.Size()) / uint64(bs), readOnly: cfg.ReadOnly,
		serial:   cfg.Serial,
		vendor:   pad(cfg.Vendor, DefaultVendor, 8),
		product:  pad(cfg.Product, DefaultProduct, 16),
		revision: pad(cfg.Revision, DefaultRevision, 4),
	}
	if l.serial == "" {
		// Stable across restarts as long as the target name and LUN are: the first 16 hex digits of a hash.
		h := sha256.Sum256([]byte(fmt.Sprintf("%s/lun%d", targetName, lun)))
		l.serial = fmt.Sprintf("%x", h[:8])
	}
	l.naa = naaDesignator(l.serial)
	l.wce.Store(true) // the backends are write-back until Flush: report it truthfully
	l.tasks.init()
	return l, nil
}

func pad(s, def string, n int) string {
	if s == "" {
		s = def
	}
	if len(s) > n {
		return s[:n]
	}
	for len(s) < n {
		s += " "
	}
	return s
}

// naaDesignator derives an NAA 3 (locally assigned, SPC-4 7.8.6.6.4) identifier from the serial: the NAA
// nibble 3 then 60 bits of a hash of the serial. Locally assigned needs no IEEE OUI (the project has none);
// the hash keeps it stable across restarts and distinct per serial.
func naaDesignator(serial string) [8]byte {
	h := sha256.Sum256([]byte("opensan-naa/" + serial))
	var d [8]byte
	copy(d[:], h[:8])
	d[0] = 0x30 | d[0]&0x0f
	return d
}

// task is one running command.
type task struct {
	key     taskKey
	done    sync.WaitGroup // Done when the command has stopped
	aborted atomic.Bool    // set by task management; long commands poll it between chunks
}

type taskKey struct {
	nexus Nexus
	tag   uint64
}

// taskSet holds the running tasks of an LU, sharded by tag so that concurrent commands do not all take
// one mutex.
type taskSet struct {
	shards [16]taskShard
}

type taskShard struct {
	mu sync.Mutex
	m  map[taskKey]*task
	_  [40]byte // keep shards on separate cache lines
}

func (s *taskSet) init() {
	for i := range s.shards {
		s.shards[i].m = make(map[taskKey]*task)
	}
}

func (s *taskSet) shard(tag uint64) *taskShard {
	return &s.shards[(tag^tag>>7^tag>>17)%uint64(len(s.shards))]
}

// add registers t; it returns false when a task with the same nexus and tag is already running (an
// overlapped command, SAM-5 5.10.2).
func (s *taskSet) add(t *task) bool {
	sh := s.shard(t.key.tag)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, dup := sh.m[t.key]; dup {
		return false
	}
	sh.m[t.key] = t
	return true
}

func (s *taskSet) remove(t *task) {
	sh := s.shard(t.key.tag)
	sh.mu.Lock()
	if sh.m[t.key] == t {
		delete(sh.m, t.key)
	}
	sh.mu.Unlock()
}

// abort marks every task that match selects as aborted, cancels it, waits until each has stopped and
// returns how many there were.
func (s *taskSet) abort(match func(taskKey) bool) int {
	var victims []*task
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, t := range sh.m {
			if match(k) {
				victims = append(victims, t)
			}
		}
		sh.mu.Unlock()
	}
	for _, t := range victims {
		t.aborted.Store(true)
	}
	for _, t := range victims {
		t.done.Wait()
	}
	return len(victims)
}

// rangeLocks serialise COMPARE AND WRITE and ORWRITE (exclusive) against every other writer of the same
// blocks (shared) without a per-LU mutex: the LBA space is cut into regions of 2^regionShift blocks,
// hashed onto 64 RWMutex stripes; a command locks the stripes its regions fall on, in ascending stripe
// order so that two commands can never wait on each other.
type rangeLocks struct {
	stripes [64]struct {
		sync.RWMutex
		_ [40]byte
	}
}

const regionShift = 11 // 2048 blocks: 1 MiB at 512-byte blocks

// mask returns the stripes covering blocks [lba, lba+n).
func (r *rangeLocks) mask(lba uint64, n uint64) uint64 {
	if n == 0 {
		return 0
	}
	first, last := lba>>regionShift, (lba+n-1)>>regionShift
	if last-first >= 63 {
		return ^uint64(0)
	}
	var m uint64
	for reg := first; reg <= last; reg++ {
		m |= 1 << (reg % 64)
	}
	return m
}

// heldLocks is a set of stripes taken by lock; unlock releases them. A value, so no allocation.
type heldLocks struct {
	r         *rangeLocks
	m         uint64
	exclusive bool
}

// lock takes the stripes of m, shared or exclusive, in ascending order.
func (r *rangeLocks) lock(m uint64, exclusive bool) heldLocks {
	for rest := m; rest != 0; rest &= rest - 1 {
		i := bits.TrailingZeros64(rest)
		if exclusive {
			r.stripes[i].Lock()
		} else {
			r.stripes[i].RLock()
		}
	}
	return heldLocks{r, m, exclusive}
}

func (h heldLocks) unlock() {
	for rest := h.m; rest != 0; rest &= rest - 1 {
		i := bits.TrailingZeros64(rest)
		if h.exclusive {
			h.r.stripes[i].Unlock()
		} else {
			h.r.stripes[i].RUnlock()
		}
	}
}

// Data-in buffers come from pools by power-of-two size class, from 512 bytes to 16 MiB. A pooled value
// carries its class so that Release needs no closure (no allocation per command).
const (
	minPoolShift = 9
	maxPoolShift = 24 // 16 MiB
)

var bufPools [maxPoolShift + 1]sync.Pool

type pooled struct {
	buf   []byte // full capacity of the class
	shift int
}

func (p *pooled) put() { bufPools[p.shift].Put(p) }

// getPooled returns a pooled buffer of at least n bytes (n > 0), or nil when n is beyond the largest class.
func getPooled(n int) *pooled {
	shift := max(bits.Len(uint(n-1)), minPoolShift)
	if shift > maxPoolShift {
		return nil
	}
	if p, _ := bufPools[shift].Get().(*pooled); p != nil {
		return p
	}
	return &pooled{buf: make([]byte, 1<<shift), shift: shift}
}

// getBuf returns a buffer of n bytes and the function that gives it back (nil when not pooled).
func getBuf(n int) ([]byte, func()) {
	if n <= 0 {
		return nil, nil
	}
	p := getPooled(n)
	if p == nil {
		return make([]byte, n), nil
	}
	return p.buf[:n], p.put
}
