package iscsi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"opensan/gateway/scsi"
)

// session is one iSCSI session with its single connection (MaxConnections=1) in full feature phase.
//
// Goroutines: the reader (run) owns PDU parsing, the CmdSN window and Data-Out placement, and runs small
// READs and WRITEs itself while the unit answers them fast (inline.go); command goroutines run the other
// commands, and blocking task management functions run on their own; the writer sends what the others
// queue; a pinger pings idle initiators and replaces a reader stuck in a command. Writes to the socket and
// StatSN are under s.wmu, so whoever has a response ready writes it when nobody else is writing; s.mu
// guards the task tables and the window.
type session struct {
	srv      *Server
	log      *slog.Logger
	nc       net.Conn
	br       *bufio.Reader
	params   Params
	tgt      *targetEntry // nil for discovery sessions
	key      sessKey
	tsih     uint16
	isid     [6]byte
	cid      uint16
	nexus    *scsi.Nexus
	authCred *CHAPConfig // credential CHAP authenticated, if any
	digests  Digests
	qd       uint32

	// sendMRDSL is the initiator's MaxRecvDataSegmentLength; a Text request may redeclare it.
	sendMRDSL atomic.Int64
	// rxPDUs counts the PDUs received; the pinger compares it between ticks to see whether the
	// initiator is alive (cheaper than reading the clock for every PDU).
	rxPDUs atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc

	out        chan *txItem
	work       chan *task // hands tasks to idle command goroutines
	quit       chan struct{}
	writerDone chan struct{}

	// wmu serialises everything written to nc after login: the writer goroutine, command goroutines that
	// write their own response when the writer is idle, and the reader flushing what it answered inline.
	wmu     sync.Mutex
	statSN  uint32 // under wmu
	wfailed bool   // under wmu: a write failed, the connection is going
	wbufs   net.Buffers
	wsend   net.Buffers
	warena  []byte
	wone    [1]*txItem

	rd *reader // the reader goroutine's state; see inline.go
	// execNs is a moving average of the time Execute takes for commands that may run inline (ns).
	execNs atomic.Int64
	// inlineAt is when the reader started executing a command itself (nanoseconds on the monotonic
	// clock, see monoNow), 0 when it is not. The pinger takes the reader role over from a reader stuck
	// there; see checkInline.
	inlineAt atomic.Int64
	// rqLen is how many responses the reader holds for its next flush; idle counts them as in flight.
	rqLen     atomic.Int32
	takeovers atomic.Int32  // times the pinger replaced a stuck reader
	inlined   atomic.Uint64 // commands the reader ran itself

	mu         sync.Mutex
	expCmdSN   uint32
	active     uint32 // delivered non-immediate SCSI commands not yet answered
	immActive  int    // immediate SCSI commands not yet answered
	pending    map[uint32]*PDU
	tasks      map[uint32]*task // by ITT
	r2ts       map[uint32]*r2t  // by TTT
	nextTTT    uint32
	buffered   int64 // bytes of write buffers held
	closed     bool
	closeErr   error // why close was called first
	loggingOut bool
	textCont   map[uint32][]byte // rest of long Text responses, by TTT
	textIn     []byte            // Text request text with C=1 so far

	tasksWG sync.WaitGroup // command and task management goroutines
	auxWG   sync.WaitGroup // pinger, logout
	scratch []byte         // reader's buffer for non-Data-Out data segments
	done    chan struct{}
}

type sessKey struct {
	initiator, isid, target string
}

func newSession(srv *Server, c net.Conn, p Params, t *targetEntry, isid [6]byte) *session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{
		srv:        srv,
		log:        srv.log,
		nc:         c,
		params:     p,
		tgt:        t,
		isid:       isid,
		key:        sessKey{lower(p.InitiatorName), string(isid[:]), lower(p.TargetName)},
		digests:    Digests{Header: p.HeaderDigest, Data: p.DataDigest},
		qd:         uint32(srv.cfg.MaxCmdsPerSession),
		ctx:        ctx,
		cancel:     cancel,
		out:        make(chan *txItem, 2*srv.cfg.MaxCmdsPerSession+16),
		rd:         &reader{},
		work:       make(chan *task),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
		pending:    make(map[uint32]*PDU),
		tasks:      make(map[uint32]*task),
		r2ts:       make(map[uint32]*r2t),
		textCont:   make(map[uint32][]byte),
		done:       make(chan struct{}),
	}
	if p.Discovery {
		s.key.target = ""
	}
	s.execNs.Store(4 * inlineMaxNs)
	s.sendMRDSL.Store(int64(p.SendDataSegmentLength))
	if t != nil {
		s.nexus = &scsi.Nexus{
			InitiatorPort:      nexusPort(p.InitiatorName, isid),
			InitiatorName:      p.InitiatorName,
			RelativeTargetPort: 1,
		}
	}
	return s
}

// run is the reader goroutine; it returns when the session has ended and every goroutine is gone.
func (s *session) run() {
	s.br = bufio.NewReaderSize(s.nc, 64<<10)
	s.scratch = make([]byte, s.params.RecvDataSegmentLength)
	go s.writer()
	s.auxWG.Add(1)
	go s.pinger()
	s.readSide(s.rd)
}

// readSide runs the reader role with state r until the connection ends, then tears the session down. It
// returns early, leaving all that to another goroutine, when the pinger took the role over (checkInline).
func (s *session) readSide(r *reader) {
	err := s.readLoop(r)
	if err == errReplaced {
		return
	}
	for _, t := range r.ready {
		s.startWorker(t) // made ready by the PDUs before the one that ended the loop
	}
	r.ready = nil
	s.flushInline(r)
	if err == nil {
		err = io.EOF
	}
	var pe *protocolError
	var de *PDUError
	if errors.As(err, &pe) || errors.As(err, &de) {
		s.lingeringClose()
	}
	s.close(err)
	s.teardown(err)
}

// lingeringClose lets the Reject that explains a protocol error reach the initiator: it waits for the
// writer to send what is queued, closes our sending side and drains what the initiator still sends for a
// moment, so the kernel does not answer with a reset that destroys the Reject in flight.
func (s *session) lingeringClose() {
	flushed := make(chan struct{})
	s.send(&txItem{done: func() { close(flushed) }})
	select {
	case <-flushed:
	case <-time.After(time.Second):
	}
	if tc, ok := s.nc.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	s.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, s.br, 4<<20)
}

// closeAfterFlush closes the connection once everything queued before has been written.
func (s *session) closeAfterFlush(err error) {
	s.send(&txItem{done: func() { s.close(err) }})
}

var errLogout = errors.New("logged out")

func (s *session) teardown(err error) {
	s.mu.Lock()
	for _, t := range s.tasks {
		if t.state == taskWaitingData {
			s.abortLocked(t)
		}
	}
	s.mu.Unlock()
	s.tasksWG.Wait()
	s.auxWG.Wait()
	close(s.quit)
	<-s.writerDone
	if s.nexus != nil {
		s.tgt.SCSI.NexusGone(s.nexus)
	}
	s.srv.unregister(s)
	s.mu.Lock()
	if s.closeErr != nil {
		err = s.closeErr // our own reason beats "use of closed network connection"
	}
	s.mu.Unlock()
	if errors.Is(err, errLogout) || errors.Is(err, io.EOF) {
		s.log.Info("iscsi session ended", "initiator", s.params.InitiatorName, "tsih", s.tsih, "reason", err)
	} else {
		s.log.Warn("iscsi session ended", "initiator", s.params.InitiatorName, "tsih", s.tsih, "reason", err)
	}
	close(s.done)
}

// teardownUnstarted undoes a registration whose final Login Response could not be sent.
func (s *session) teardownUnstarted() {
	if s.nexus != nil {
		s.tgt.SCSI.NexusGone(s.nexus)
	}
	s.srv.unregister(s)
	close(s.done)
}

// close ends the connection: running commands see ctx cancelled, the reader and writer see the socket
// closed. It is idempotent.
func (s *session) close(err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.closeErr = err
	s.mu.Unlock()
	s.cancel()
	s.nc.Close()
}

// idle reports whether no command is in flight.
func (s *session) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tasks) == 0 && s.rqLen.Load() == 0
}

// maxCmdSNLocked is the window's upper edge: queue depth minus the commands still running.
func (s *session) maxCmdSNLocked() uint32 {
	return s.expCmdSN + s.qd - 1 - s.active
}

// inWindow reports whether sn lies in [exp, max] in serial number arithmetic (RFC 1982).
func inWindow(sn, exp, max uint32) bool {
	return sn-exp <= max-exp
}

func (s *session) newTTTLocked() uint32 {
	s.nextTTT++
	if s.nextTTT == ReservedTag {
		s.nextTTT = 1
	}
	return s.nextTTT
}

// readLoop reads PDUs until the connection fails or a protocol error ends it, or until the pinger took
// the reader role over (errReplaced). Commands that may run inline run here between PDUs (see inline.go);
// their responses are written in one batch before the reader may block on the socket.
func (s *session) readLoop(r *reader) error {
	var p PDU
	for {
		if s.mayBlock() {
			s.flushInline(r)
		}
		p.Data = nil
		err := ReadHeader(s.br, s.digests, s.params.RecvDataSegmentLength, &p)
		if err != nil {
			if errors.Is(err, ErrDataTooLong) || errors.Is(err, ErrBadAHS) {
				s.reject(&p.BHS, RejectProtocolError)
			}
			return err
		}
		s.rxPDUs.Add(1)
		op := p.BHS.Opcode()
		if op == OpDataOut {
			if err := s.handleDataOut(&p); err != nil {
				return err
			}
		} else {
			p.Data = s.scratch[:p.BHS.DataSegmentLength()]
			if err := ReadData(s.br, s.digests, &p.BHS, p.Data); err != nil {
				if errors.Is(err, ErrDataDigest) {
					s.reject(&p.BHS, RejectDataDigest) // ERL 0: no recovery, the connection goes
				}
				return err
			}
			if op != OpSCSICmd {
				// Whatever answers a NOP-Out, TMF, Text or Logout must follow the responses already
				// produced (a TMF response follows the end of the tasks it names, a Logout Response
				// every command's).
				s.flushInline(r)
			}
			if err := s.dispatch(&p); err != nil {
				return err
			}
		}
		if len(r.ready) > 0 {
			if err := s.runInline(r); err != nil {
				return err
			}
		}
	}
}

// carriesCmdSN reports opcodes that are ordered by CmdSN when not immediate.
func carriesCmdSN(op uint8) bool {
	switch op {
	case OpSCSICmd, OpNOPOut, OpTaskMgmtReq, OpTextReq, OpLogoutReq:
		return true
	}
	return false
}

// dispatch applies the CmdSN window (RFC 7143 3.2.2.1) and hands PDUs to their handlers in CmdSN order.
func (s *session) dispatch(p *PDU) error {
	h := &p.BHS
	op := h.Opcode()
	if !carriesCmdSN(op) {
		if op == OpSNACKReq {
			s.reject(h, RejectProtocolError) // no SNACK at ErrorRecoveryLevel 0
			return nil
		}
		s.reject(h, RejectNotSupported)
		return nil
	}
	if s.params.Discovery && (op == OpSCSICmd || op == OpTaskMgmtReq) {
		s.reject(h, RejectProtocolError) // discovery sessions carry Text, Logout and NOP only
		return nil
	}
	if h.Immediate() {
		return s.exec(p, false)
	}
	if op == OpNOPOut && h.ITT() == ReservedTag {
		return protoErr(h, "NOP-Out with ITT 0xffffffff must be immediate")
	}
	sn := h.CmdSN()
	s.mu.Lock()
	if sn != s.expCmdSN {
		if inWindow(sn, s.expCmdSN, s.maxCmdSNLocked()) && len(s.pending) < int(s.qd) {
			if _, dup := s.pending[sn]; !dup {
				q := &PDU{BHS: p.BHS, AHS: append([]byte(nil), p.AHS...), Data: append([]byte(nil), p.Data...)}
				s.pending[sn] = q
			}
		} else {
			s.log.Debug("iscsi CmdSN outside window dropped", "cmdsn", sn, "exp", s.expCmdSN)
		}
		s.mu.Unlock()
		return nil
	}
	s.deliverLocked(op)
	s.mu.Unlock()
	if err := s.exec(p, true); err != nil {
		return err
	}
	for {
		s.mu.Lock()
		q, ok := s.pending[s.expCmdSN]
		if !ok {
			s.mu.Unlock()
			return nil
		}
		delete(s.pending, s.expCmdSN)
		s.deliverLocked(q.BHS.Opcode())
		s.mu.Unlock()
		if err := s.exec(q, true); err != nil {
			return err
		}
	}
}

func (s *session) deliverLocked(op uint8) {
	s.expCmdSN++
	if op == OpSCSICmd {
		s.active++
	}
}

func (s *session) exec(p *PDU, ordered bool) error {
	switch p.BHS.Opcode() {
	case OpSCSICmd:
		return s.handleSCSICmd(p, ordered)
	case OpNOPOut:
		return s.handleNOPOut(p)
	case OpTaskMgmtReq:
		return s.handleTMF(p)
	case OpTextReq:
		return s.handleText(p)
	case OpLogoutReq:
		return s.handleLogout(p)
	}
	return nil
}

// protocolError ends the connection after a Reject (ERL 0 has no recovery).
type protocolError struct {
	op  uint8
	msg string
}

func (e *protocolError) Error() string { return fmt.Sprintf("iscsi: %s: %s", opName(e.op), e.msg) }

func protoErr(h *BHS, format string, args ...any) error {
	return &protocolError{op: h.Opcode(), msg: fmt.Sprintf(format, args...)}
}

// snMode says how the writer fills StatSN.
type snMode uint8

const (
	snNone    snMode = iota // field reserved (Data-In without status)
	snCurrent               // next StatSN, not advanced (R2T, unsolicited NOP-In)
	snAdvance               // a status: assign StatSN and advance
)

type txPDU struct {
	h    BHS
	ahs  []byte
	data []byte
	sn   snMode
}

// txItem is a group of PDUs written back to back; done runs once they are on the wire (or dropped), and
// a command's result (res) is released then.
type txItem struct {
	pdus   []txPDU
	done   func()
	res    scsi.Result
	hasRes bool
	pooled bool     // from txPool: finish returns it
	inl    [2]txPDU // pdus' storage for the usual one or two PDUs of a response
}

var txPool = sync.Pool{New: func() any { return new(txItem) }}

// newTxItem returns a pooled item with room for n PDUs.
func newTxItem(n int) *txItem {
	it := txPool.Get().(*txItem)
	it.pooled = true
	if n <= len(it.inl) {
		it.pdus = it.inl[:0]
	} else {
		it.pdus = make([]txPDU, 0, n)
	}
	return it
}

// finish runs done and releases the result; a pooled item goes back to its pool and must not be used
// afterwards.
func (it *txItem) finish() {
	if it.done != nil {
		it.done()
		it.done = nil
	}
	if it.hasRes {
		it.res.Release()
		it.hasRes = false
	}
	if it.pooled {
		*it = txItem{}
		txPool.Put(it)
	}
}

// send queues it for the writer. After the writer has gone it just finishes the item.
func (s *session) send(it *txItem) {
	select {
	case s.out <- it:
	case <-s.writerDone:
		it.finish()
	}
}

func (s *session) sendPDU(h *BHS, data []byte, sn snMode) {
	s.send(&txItem{pdus: []txPDU{{h: *h, data: data, sn: sn}}})
}

// maxBatch bounds the PDUs gathered into one vectored write.
const maxBatch = 64

// writer writes what the other goroutines queue on s.out, gathering what is queued into one writev.
func (s *session) writer() {
	defer close(s.writerDone)
	var batch []*txItem
	flush := func() {
		s.wmu.Lock()
		s.writeLocked(batch)
		s.wmu.Unlock()
		for i, it := range batch {
			it.finish()
			batch[i] = nil
		}
		batch = batch[:0]
	}
	for {
		select {
		case it := <-s.out:
			batch = append(batch, it)
		gather:
			for n := len(it.pdus); n < maxBatch; {
				select {
				case it2 := <-s.out:
					batch = append(batch, it2)
					n += len(it2.pdus)
				default:
					break gather
				}
			}
			flush()
		case <-s.quit:
			for {
				select {
				case it := <-s.out:
					batch = append(batch, it)
					flush()
				default:
					return
				}
			}
		}
	}
}

// sendResponse writes it at once when nobody else is writing and nothing is queued (saving the
// writer goroutine's wake-up, the dearest part of a small command), else queues it for the writer.
func (s *session) sendResponse(it *txItem) {
	if len(s.out) == 0 && s.wmu.TryLock() {
		s.wone[0] = it
		s.writeLocked(s.wone[:])
		s.wone[0] = nil
		s.wmu.Unlock()
		it.finish()
		return
	}
	s.send(it)
}

// writeLocked stamps and writes batch with one writev; s.wmu is held. After a failed write it writes
// nothing more: the connection is closing.
func (s *session) writeLocked(batch []*txItem) {
	if s.wfailed {
		return
	}
	s.wbufs, s.warena = s.encodeBatch(batch, s.wbufs[:0], s.warena[:0])
	if len(s.wbufs) == 0 {
		return
	}
	s.wsend = s.wbufs // WriteTo consumes its receiver; a field, because a local would escape
	_, err := s.wsend.WriteTo(s.nc)
	s.wsend = nil
	clear(s.wbufs[:cap(s.wbufs)]) // drop references to data buffers that go back to pools
	if err != nil {
		s.wfailed = true
		s.close(err)
	}
}

// encodeBatch stamps StatSN (under s.wmu), ExpCmdSN and MaxCmdSN into the PDUs of batch and appends
// their iovecs to bufs, headers and digests going to arena.
func (s *session) encodeBatch(batch []*txItem, bufs net.Buffers, arena []byte) (net.Buffers, []byte) {
	s.mu.Lock()
	exp, max := s.expCmdSN, s.maxCmdSNLocked()
	s.mu.Unlock()
	for _, it := range batch {
		for i := range it.pdus {
			p := &it.pdus[i]
			switch p.sn {
			case snCurrent:
				p.h.SetStatSN(s.statSN)
			case snAdvance:
				p.h.SetStatSN(s.statSN)
				s.statSN++
			}
			p.h.SetExpCmdSN(exp)
			p.h.SetMaxCmdSN(max)
			start := len(arena)
			arena = append(arena, p.h[:]...)
			arena = append(arena, p.ahs...)
			hdr := arena[start:]
			hdr[4] = byte(len(p.ahs) / 4)
			hdr[5], hdr[6], hdr[7] = byte(len(p.data)>>16), byte(len(p.data)>>8), byte(len(p.data))
			if s.digests.Header {
				arena = appendCRC(arena, hdr)
			}
			bufs = append(bufs, arena[start:len(arena):len(arena)])
			if len(p.data) == 0 {
				continue
			}
			bufs = append(bufs, p.data)
			pad := zeroPad[:pad4(len(p.data))]
			if len(pad) > 0 {
				bufs = append(bufs, pad)
			}
			if s.digests.Data {
				start := len(arena)
				arena = appendDataCRC(arena, p.data, pad)
				bufs = append(bufs, arena[start:len(arena):len(arena)])
			}
		}
	}
	return bufs, arena
}

// reject sends a Reject carrying the rejected PDU's header (RFC 7143 11.17).
func (s *session) reject(h *BHS, reason uint8) {
	var r BHS
	r.SetOpcode(OpReject)
	r.SetFlags(FlagFinal)
	r.SetRejectReason(reason)
	r.SetITT(ReservedTag)
	hdr := make([]byte, BHSLen)
	copy(hdr, h[:])
	s.sendPDU(&r, hdr, snAdvance)
}

// pinger sends NOP-In pings on idle connections and drops connections that stop answering. It also
// watches the reader: one stuck in a command it executes itself loses the reader role (checkInline).
func (s *session) pinger() {
	defer s.auxWG.Done()
	interval, timeout := s.srv.cfg.NopInInterval, s.srv.cfg.NopInTimeout
	tick := time.NewTicker(min(interval, timeout, 2*inlineStall) / 2)
	defer tick.Stop()
	var (
		outstanding bool
		pingAt      time.Time
		lastRx      = s.rxPDUs.Load()
		lastRxAt    = time.Now() // when the pinger last saw rxPDUs move (tick resolution)
	)
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-tick.C:
			s.checkInline()
			if rx := s.rxPDUs.Load(); rx != lastRx {
				lastRx, lastRxAt = rx, now
				outstanding = false // any PDU after the ping proves the initiator alive
			}
			if outstanding && now.Sub(pingAt) > timeout {
				s.log.Warn("iscsi initiator stopped answering NOP-In pings", "initiator", s.params.InitiatorName, "tsih", s.tsih)
				s.close(errors.New("NOP-In ping timeout"))
				return
			}
			if !outstanding && now.Sub(lastRxAt) >= interval {
				var h BHS
				h.SetOpcode(OpNOPIn)
				h.SetFlags(FlagFinal)
				h.SetITT(ReservedTag)
				s.mu.Lock()
				h.SetTTT(s.newTTTLocked())
				s.mu.Unlock()
				s.sendPDU(&h, nil, snCurrent)
				outstanding, pingAt = true, now
			}
		}
	}
}

// requestLogout sends an Async Message asking the initiator to log out (event 1, RFC 7143 11.9.1).
func (s *session) requestLogout() {
	var h BHS
	h.SetOpcode(OpAsyncMsg)
	h.SetFlags(FlagFinal)
	h.SetITT(ReservedTag)
	h.SetAsyncEvent(1, 0, 0, 0, 2) // Parameter3: seconds the initiator has to log out
	s.sendPDU(&h, nil, snAdvance)
}

func (s *session) handleNOPOut(p *PDU) error {
	h := &p.BHS
	if h.ITT() == ReservedTag {
		// An answer to our ping (TTT set) or a one-way ping; no response either way. rxPDUs already
		// counts it as proof of life.
		return nil
	}
	var r BHS
	r.SetOpcode(OpNOPIn)
	r.SetFlags(FlagFinal)
	r.SetLUNField(h.LUNField())
	r.SetITT(h.ITT())
	r.SetTTT(ReservedTag)
	data := p.Data
	if lim := int(s.sendMRDSL.Load()); len(data) > lim {
		data = data[:lim]
	}
	s.sendPDU(&r, append([]byte(nil), data...), snAdvance)
	return nil
}

func (s *session) handleLogout(p *PDU) error {
	h := &p.BHS
	var r BHS
	r.SetOpcode(OpLogoutResp)
	r.SetFlags(FlagFinal)
	r.SetITT(h.ITT())
	switch h.LogoutReason() {
	case 0, 1: // close the session / close the connection: the same with one connection
		if h.LogoutReason() == 1 && h.CID() != s.cid {
			r.SetResponse(1) // CID not found
			s.sendPDU(&r, nil, snAdvance)
			return nil
		}
	case 2:
		r.SetResponse(2) // connection recovery is not supported at ERL 0
		s.sendPDU(&r, nil, snAdvance)
		return nil
	default:
		s.reject(h, RejectInvalidField)
		return nil
	}
	s.mu.Lock()
	if s.loggingOut {
		s.mu.Unlock()
		s.reject(h, RejectWaitingLogout)
		return nil
	}
	s.loggingOut = true
	for _, t := range s.tasks {
		if t.state == taskWaitingData {
			s.abortLocked(t) // no more Data-Out will come for it
		}
	}
	s.mu.Unlock()
	s.auxWG.Add(1)
	go func() {
		defer s.auxWG.Done()
		s.tasksWG.Wait() // the response follows every in-flight command's (RFC 7143 11.14)
		s.send(&txItem{pdus: []txPDU{{h: r, sn: snAdvance}}, done: func() { s.close(errLogout) }})
	}()
	return nil
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
