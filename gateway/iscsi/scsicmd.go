package iscsi

import (
	"encoding/binary"
	"fmt"
	"time"

	"opensan/gateway/scsi"
)

type taskState uint8

const (
	taskWaitingData taskState = iota // Data-Out still due
	taskExecuting                    // handed to scsi.Target.Execute
	taskAborted                      // aborted before execution; no response
)

// task is one SCSI command of a session.
type task struct {
	itt      uint32
	lunField uint64
	lun      uint64
	ordered  bool // delivered through the CmdSN window (counts in session.active)
	state    taskState
	attr     scsi.TaskAttribute
	cdb      []byte
	read     bool
	write    bool
	edtl     uint32 // Expected Data Transfer Length (bytes): write length, or read length if not bidi
	readLen  uint32 // bytes the initiator accepts back
	buf      []byte // write data, edtl bytes
	budget   int64  // bytes charged to session.buffered
	// small marks a READ or WRITE of at most inlineMaxLen bytes: it may run on the reader (inline.go).
	small  bool
	cdbBuf [16]byte     // storage for cdb when it fits the BHS
	cmd    scsi.Command // what Execute gets; part of the task to save an allocation

	// Data-Out bookkeeping (RFC 7143 4.2.4.x, 11.7): unsolicited data covers [0, unsolLen); R2Ts cover
	// [unsolLen, edtl) in bursts of at most MaxBurstLength, at most MaxOutstandingR2T at a time.
	unsolLen  uint32
	unsolGot  uint32
	unsolSN   uint32 // next DataSN of the unsolicited sequence
	unsolOpen bool   // unsolicited Data-Out PDUs may still arrive
	got       uint32
	nextR2T   uint32
	r2tSN     uint32
	r2ts      []uint32 // outstanding TTTs
	failed    bool     // a Data-Out broke its sequence: drain, then CHECK CONDITION
}

// r2t is one outstanding Ready To Transfer.
type r2t struct {
	t      *task
	ttt    uint32
	offset uint32 // bytes into the command's data
	length uint32 // desired data transfer length
	got    uint32
	dataSN uint32 // next DataSN expected
}

// decodeLUN turns an 8-byte LUN field (SAM-5 4.7) into a flat LUN number. Peripheral (00b) and flat space
// (01b) addressing of the first level are understood; anything else maps to a number no LU uses.
func decodeLUN(f uint64) uint64 {
	b0 := byte(f >> 56)
	switch b0 >> 6 {
	case 0:
		if b0 == 0 {
			return uint64(byte(f >> 48))
		}
	case 1:
		return (f >> 48) & 0x3fff
	}
	return 1<<63 | f
}

// encodeLUN is decodeLUN's inverse for LUNs below 16384.
func encodeLUN(lun uint64) uint64 {
	if lun < 256 {
		return lun << 48
	}
	return (0x4000 | lun&0x3fff) << 48
}

// fixedSense builds fixed-format sense data (SPC-4 4.5.3) with a sense key, ASC and ASCQ.
func fixedSense(key, asc, ascq byte) []byte {
	b := make([]byte, 18)
	b[0] = 0x70
	b[2] = key
	b[7] = 10 // additional sense length
	b[12], b[13] = asc, ascq
	return b
}

// taskAttr maps the iSCSI ATTR field (RFC 7143 11.3.1: 0 untagged, 1 simple, 2 ordered, 3 head of
// queue, 4 ACA) to the SAM task attribute.
func taskAttr(a uint8) scsi.TaskAttribute {
	switch a {
	case 2:
		return scsi.Ordered
	case 3:
		return scsi.HeadOfQueue
	case 4:
		return scsi.ACA
	}
	return scsi.Simple
}

// maxCDBLen is the longest CDB an extended CDB AHS can carry in practice (SPC-4: 260 bytes).
const maxCDBLen = 260

func (s *session) handleSCSICmd(p *PDU, ordered bool) error {
	h := &p.BHS
	s.mu.Lock()
	loggingOut := s.loggingOut
	immFull := !ordered && s.immActive >= int(s.qd)
	s.mu.Unlock()
	done := func() { // the command gets no task: give its CmdSN slot back
		s.mu.Lock()
		if ordered {
			s.active--
		}
		s.mu.Unlock()
	}
	if loggingOut {
		done()
		s.reject(h, RejectWaitingLogout)
		return nil
	}
	if immFull {
		s.reject(h, RejectImmediate)
		return nil
	}
	itt := h.ITT()
	if itt == ReservedTag {
		done()
		s.reject(h, RejectInvalidField)
		return nil
	}
	t := &task{}
	cdb := append(t.cdbBuf[:0], h.CDB()...)
	if ext := FindAHS(p.AHS, AHSExtendedCDB); ext != nil {
		if len(ext) < 2 || 16+len(ext)-1 > maxCDBLen {
			done()
			s.reject(h, RejectInvalidField)
			return nil
		}
		cdb = append(cdb, ext[1:]...) // ext[0] is reserved
	}
	t.itt = itt
	t.lunField = h.LUNField()
	t.lun = decodeLUN(h.LUNField())
	t.ordered = ordered
	t.attr = taskAttr(h.TaskAttr())
	t.cdb = cdb
	t.read = h.Flags()&FlagRead != 0
	t.write = h.Flags()&FlagWrite != 0
	t.edtl = h.ExpectedDataLength()
	switch {
	case t.read && t.write:
		b := FindAHS(p.AHS, AHSBidiReadLen)
		if len(b) < 5 {
			done()
			s.reject(h, RejectProtocolError)
			return nil
		}
		t.readLen = binary.BigEndian.Uint32(b[1:5])
	case t.read:
		t.readLen = t.edtl
	}
	imm := uint32(len(p.Data))
	if imm > 0 && (!t.write || !s.params.ImmediateData || imm > t.edtl || int(imm) > s.params.FirstBurstLength) {
		done()
		s.reject(h, RejectProtocolError)
		return protoErr(h, "%d bytes of immediate data not allowed (EDTL %d)", imm, t.edtl)
	}
	if !h.Final() && (!t.write || s.params.InitialR2T) {
		done()
		s.reject(h, RejectProtocolError)
		return protoErr(h, "F bit clear but no unsolicited Data-Out allowed")
	}
	if !t.write {
		t.edtl = 0 // nothing flows out; the field was the read length
	}
	t.small = readWriteOp(cdb[0]) && t.read != t.write && t.edtl <= inlineMaxLen && t.readLen <= inlineMaxLen

	s.mu.Lock()
	if _, dup := s.tasks[itt]; dup {
		s.mu.Unlock()
		done()
		s.reject(h, RejectTaskInProgress)
		return nil
	}
	s.tasks[itt] = t
	if !ordered {
		s.immActive++
	}
	var status byte
	var sense []byte
	if t.edtl > 0 {
		switch {
		case int64(t.edtl) > s.srv.cfg.MaxSessionBuffer:
			status, sense = scsi.StatusCheckCondition, fixedSense(0x05, 0x24, 0x00) // INVALID FIELD IN CDB
		case s.buffered+int64(t.edtl) > s.srv.cfg.MaxSessionBuffer:
			status = scsi.StatusTaskSetFull
		default:
			t.budget = int64(t.edtl)
			s.buffered += t.budget
		}
	}
	s.mu.Unlock()
	if t.edtl > 0 && t.budget == 0 {
		// Any unsolicited Data-Out for it finds no waiting task and is discarded.
		s.mu.Lock()
		t.state = taskExecuting
		s.mu.Unlock()
		s.respond(t, &scsi.Result{Status: status, Sense: sense})
		return nil
	}
	if t.edtl == 0 {
		s.execute(t)
		return nil
	}
	t.buf = getBuf(int(t.edtl))
	copy(t.buf, p.Data)
	t.got = imm
	t.unsolGot = imm
	t.unsolLen = imm
	if !h.Final() {
		t.unsolLen = min(uint32(s.params.FirstBurstLength), t.edtl)
		t.unsolOpen = t.unsolLen > imm
	}
	t.nextR2T = t.unsolLen
	s.mu.Lock()
	r2ts := s.issueR2TsLocked(t)
	complete := t.got == t.edtl
	s.mu.Unlock()
	s.sendIf(r2ts)
	if complete {
		s.execute(t)
	}
	return nil
}

// issueR2TsLocked prepares R2Ts for the next bursts until MaxOutstandingR2T are in flight. The caller
// sends the returned item after unlocking s.mu.
func (s *session) issueR2TsLocked(t *task) *txItem {
	var it *txItem
	for len(t.r2ts) < s.params.MaxOutstandingR2T && t.nextR2T < t.edtl {
		n := min(uint32(s.params.MaxBurstLength), t.edtl-t.nextR2T)
		r := &r2t{t: t, ttt: s.newTTTLocked(), offset: t.nextR2T, length: n}
		s.r2ts[r.ttt] = r
		t.r2ts = append(t.r2ts, r.ttt)
		var h BHS
		h.SetOpcode(OpR2T)
		h.SetFlags(FlagFinal)
		h.SetLUNField(t.lunField)
		h.SetITT(t.itt)
		h.SetTTT(r.ttt)
		h.SetDataSN(t.r2tSN) // R2TSN
		h.SetBufferOffset(r.offset)
		h.SetDesiredDataLength(n)
		t.r2tSN++
		t.nextR2T += n
		if it == nil {
			it = &txItem{}
		}
		it.pdus = append(it.pdus, txPDU{h: h, sn: snCurrent})
	}
	return it
}

// sendIf sends it unless it is nil. Reader goroutine only: it goes out with the reader's next batch.
func (s *session) sendIf(it *txItem) {
	if it != nil {
		s.queueInline(s.rd, it)
	}
}

// readWriteOp reports the operation codes of READ and WRITE (6, 10, 12, 16): the commands that may run
// inline.
func readWriteOp(op byte) bool {
	switch op {
	case 0x08, 0x0a, 0x28, 0x2a, 0xa8, 0xaa, 0x88, 0x8a:
		return true
	}
	return false
}

// handleDataOut places one Data-Out PDU's data straight into its command's buffer.
//
// A Data-Out that breaks its sequence (DataSN, BufferOffset, length, TTT) gets a Reject and fails its
// task: the rest of the task's Data-Out is drained and then the task ends with CHECK CONDITION (RFC 7143
// 11.17.1), while the connection and the other tasks carry on.
func (s *session) handleDataOut(p *PDU) error {
	h := &p.BHS
	n := uint32(h.DataSegmentLength())
	off, sn, ttt := h.BufferOffset(), h.DataSN(), h.TTT()
	s.mu.Lock()
	t := s.tasks[h.ITT()]
	if t == nil || t.state != taskWaitingData {
		s.mu.Unlock()
		return s.discard(h) // aborted or unknown task: its remaining data is dropped (RFC 7143 11.5.1)
	}
	var r *r2t
	var bad string
	var reason uint8 = RejectProtocolError
	if ttt == ReservedTag {
		if !t.unsolOpen || sn != t.unsolSN || off != t.unsolGot || off+n > t.unsolLen || off+n < off {
			bad = fmt.Sprintf("unsolicited Data-Out DataSN %d offset %d length %d does not follow (expected DataSN %d offset %d, first burst %d)",
				sn, off, n, t.unsolSN, t.unsolGot, t.unsolLen)
		}
	} else {
		r = s.r2ts[ttt]
		switch {
		case r == nil || r.t != t:
			r = nil
			reason = RejectInvalidField
			bad = fmt.Sprintf("Data-Out TTT 0x%08x matches no R2T of ITT 0x%08x", ttt, t.itt)
		case sn != r.dataSN || off != r.offset+r.got || r.got+n > r.length || r.got+n < r.got:
			bad = fmt.Sprintf("Data-Out DataSN %d offset %d length %d does not follow R2T (expected DataSN %d offset %d, %d bytes left)",
				sn, off, n, r.dataSN, r.offset+r.got, r.length-r.got)
		}
	}
	if bad != "" || t.failed {
		if bad != "" && !t.failed {
			t.failed = true
			t.nextR2T = t.edtl // no more R2Ts
			s.log.Warn("iscsi Data-Out sequence error", "initiator", s.params.InitiatorName, "itt", t.itt, "err", bad)
			s.reject(h, reason)
		}
		// Close the sequence this PDU ends, whatever its content.
		if h.Final() {
			if ttt == ReservedTag {
				t.unsolOpen = false
			} else if r != nil {
				s.dropR2TLocked(t, ttt)
			}
		}
		drained := !t.unsolOpen && len(t.r2ts) == 0
		if drained {
			t.state = taskExecuting
		}
		s.mu.Unlock()
		if err := s.discard(h); err != nil {
			return err
		}
		if drained {
			s.respond(t, &scsi.Result{Status: scsi.StatusCheckCondition, Sense: fixedSense(0x0b, 0x4b, 0x00)}) // ABORTED COMMAND, DATA PHASE ERROR
		}
		return nil
	}
	dst := t.buf[off : off+n]
	s.mu.Unlock()
	if err := ReadData(s.br, s.digests, h, dst); err != nil {
		return err
	}
	s.mu.Lock()
	if t.state != taskWaitingData { // aborted while the data was arriving
		s.mu.Unlock()
		return nil
	}
	t.got += n
	var r2ts *txItem
	if r == nil {
		t.unsolGot += n
		t.unsolSN++
		if h.Final() {
			t.unsolOpen = false
			if t.unsolGot != t.unsolLen {
				t.failed = true
				t.nextR2T = t.edtl
				s.reject(h, RejectProtocolError)
			}
		}
	} else {
		r.got += n
		r.dataSN++
		if h.Final() {
			s.dropR2TLocked(t, ttt)
			if r.got != r.length {
				t.failed = true
				t.nextR2T = t.edtl
				s.reject(h, RejectProtocolError)
			} else {
				r2ts = s.issueR2TsLocked(t)
			}
		}
	}
	complete := t.got == t.edtl && !t.unsolOpen && len(t.r2ts) == 0
	failed := t.failed && !t.unsolOpen && len(t.r2ts) == 0
	if failed {
		t.state = taskExecuting
	}
	s.mu.Unlock()
	s.sendIf(r2ts)
	if failed {
		s.respond(t, &scsi.Result{Status: scsi.StatusCheckCondition, Sense: fixedSense(0x0b, 0x4b, 0x00)})
	} else if complete {
		s.execute(t)
	}
	return nil
}

func (s *session) dropR2TLocked(t *task, ttt uint32) {
	delete(s.r2ts, ttt)
	for i, x := range t.r2ts {
		if x == ttt {
			t.r2ts = append(t.r2ts[:i], t.r2ts[i+1:]...)
			break
		}
	}
}

// discard reads and drops the data segment of the PDU whose header was just read.
func (s *session) discard(h *BHS) error {
	return ReadData(s.br, s.digests, h, s.scratch[:h.DataSegmentLength()])
}

// abortLocked stops a task that has not reached the SCSI layer: no response is sent for it, its R2Ts
// die and its CmdSN slot is given back. Its buffer is left to the garbage collector because the reader
// may still be filling it.
func (s *session) abortLocked(t *task) {
	t.state = taskAborted
	for _, ttt := range t.r2ts {
		delete(s.r2ts, ttt)
	}
	t.r2ts = nil
	s.releaseLocked(t)
}

// releaseLocked removes t from the task table and returns its window slot and buffer budget.
func (s *session) releaseLocked(t *task) {
	if s.tasks[t.itt] == t {
		delete(s.tasks, t.itt)
	}
	if t.ordered {
		s.active--
	} else {
		s.immActive--
	}
	s.buffered -= t.budget
	t.budget = 0
}

// execute hands a task whose data is complete to the SCSI layer: to the reader itself when it may run
// inline (inline.go), else to a command goroutine. Reader goroutine only.
func (s *session) execute(t *task) {
	s.mu.Lock()
	if t.state != taskWaitingData {
		s.mu.Unlock()
		return
	}
	t.state = taskExecuting
	s.tasksWG.Add(1)
	s.mu.Unlock()
	if s.inlineOK(t) {
		s.rd.ready = append(s.rd.ready, t)
		return
	}
	s.startWorker(t)
}

// startWorker runs t on an idle command goroutine, or a new one.
func (s *session) startWorker(t *task) {
	select {
	case s.work <- t: // an idle worker takes it
	default:
		s.auxWG.Add(1)
		go s.worker(t)
	}
}

// workerIdle is how long a command goroutine waits for the next command before it exits. Reusing
// goroutines keeps their grown stacks: Execute runs deep.
const workerIdle = 2 * time.Second

// worker runs t, then further tasks handed over through s.work, until idle for workerIdle or the
// session ends. At most queue-depth workers exist because at most that many tasks execute at once.
func (s *session) worker(t *task) {
	defer s.auxWG.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		s.run1(t)
		idle.Reset(workerIdle)
		select {
		case t = <-s.work:
		case <-idle.C:
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// run1 executes one task on a command goroutine and answers it (or not, when it was aborted).
func (s *session) run1(t *task) {
	defer s.tasksWG.Done()
	var start int64
	if t.small {
		start = monoNow()
	}
	res := s.execTask(t, start)
	s.finishTask(t, &res)
}

// execTask runs t through the SCSI layer. A nonzero start is when it began (monoNow): its duration then
// counts in the average that decides inline execution.
func (s *session) execTask(t *task, start int64) scsi.Result {
	t.cmd = scsi.Command{
		Nexus:        s.nexus,
		LUN:          t.lun,
		Tag:          uint64(t.itt),
		Attr:         t.attr,
		CDB:          t.cdb,
		DataInLength: t.readLen,
	}
	if t.write {
		t.cmd.DataOut = t.buf[:t.edtl]
	}
	res := s.tgt.SCSI.Execute(s.ctx, &t.cmd)
	if start != 0 {
		s.noteExec(monoNow() - start)
	}
	t.cmd = scsi.Command{}
	if t.buf != nil {
		putBuf(t.buf) // the SCSI layer keeps no reference to DataOut after Execute
		t.buf = nil
	}
	return res
}

// finishTask answers an executed task from a command goroutine, or drops it when it was aborted.
func (s *session) finishTask(t *task, res *scsi.Result) {
	if res.Aborted {
		s.dropTask(t, res)
		return
	}
	s.sendResponse(s.response(t, res))
}

// dropTask forgets an aborted task: no response.
func (s *session) dropTask(t *task, res *scsi.Result) {
	res.Release()
	s.mu.Lock()
	s.releaseLocked(t)
	s.mu.Unlock()
}

// residual computes the residual flags and count of a transfer the initiator expected exp bytes of and
// the command wanted got bytes of (RFC 7143 11.4.5).
func residual(exp, want uint64, over, under uint8) (uint8, uint32) {
	switch {
	case want > exp:
		return over, uint32(min(want-exp, 1<<32-1))
	case want < exp:
		return under, uint32(exp - want)
	}
	return 0, 0
}

// respond queues a task's response for the writer (see response).
func (s *session) respond(t *task, res *scsi.Result) { s.send(s.response(t, res)) }

// response builds a task's Data-In PDUs and status; the item releases the result's buffer once written.
// It gives the command's CmdSN slot back first so the status carries the advanced MaxCmdSN. The result
// belongs to the item afterwards.
func (s *session) response(t *task, res *scsi.Result) *txItem {
	s.mu.Lock()
	s.releaseLocked(t)
	s.mu.Unlock()

	data := res.DataIn
	bidi := t.read && t.write
	readFlags, readResid := residual(uint64(t.readLen), uint64(len(res.DataIn)), FlagOverflow, FlagUnderflow)
	if len(data) > int(t.readLen) {
		data = data[:t.readLen]
	}
	var writeFlags uint8
	var writeResid uint32
	if t.write {
		writeFlags, writeResid = residual(uint64(t.edtl), uint64(res.DataOutWanted), FlagOverflow, FlagUnderflow)
	}
	mrdsl := int(s.sendMRDSL.Load())
	burst := s.params.MaxBurstLength
	nPDUs := 0
	if len(data) > 0 {
		nPDUs = (len(data) + mrdsl - 1) / mrdsl
	}
	it := newTxItem(nPDUs + 1)
	it.res, it.hasRes = *res, true
	*res = scsi.Result{}
	res = &it.res
	phaseCollapse := len(data) > 0 && len(res.Sense) == 0 && !bidi
	var dataSN uint32
	for off := 0; off < len(data); {
		n := min(mrdsl, len(data)-off)
		// A Data-In sequence ends at each MaxBurstLength boundary (F bit).
		seqEnd := (off/burst + 1) * burst
		if off+n > seqEnd {
			n = seqEnd - off
		}
		var h BHS
		h.SetOpcode(OpDataIn)
		flags := uint8(0)
		last := off+n == len(data)
		if last || off+n == seqEnd {
			flags |= FlagFinal
		}
		sn := snNone
		if last && phaseCollapse {
			flags |= FlagStatus | readFlags
			h.SetStatus(res.Status)
			h.SetResidualCount(readResid)
			sn = snAdvance
		}
		h.SetFlags(flags)
		h.SetLUNField(t.lunField)
		h.SetITT(t.itt)
		h.SetTTT(ReservedTag)
		h.SetDataSN(dataSN)
		h.SetBufferOffset(uint32(off))
		it.pdus = append(it.pdus, txPDU{h: h, data: data[off : off+n], sn: sn})
		dataSN++
		off += n
	}
	if !phaseCollapse {
		var h BHS
		h.SetOpcode(OpSCSIResp)
		flags := uint8(FlagFinal)
		switch {
		case bidi:
			flags |= writeFlags
			h.SetResidualCount(writeResid)
			switch readFlags {
			case FlagOverflow:
				flags |= FlagBiOver
			case FlagUnderflow:
				flags |= FlagBiUnder
			}
			h.SetBidiResidualCount(readResid)
		case t.write:
			flags |= writeFlags
			h.SetResidualCount(writeResid)
		default:
			flags |= readFlags
			h.SetResidualCount(readResid)
		}
		h.SetFlags(flags)
		h.SetResponse(0x00) // command completed at target
		h.SetStatus(res.Status)
		h.SetITT(t.itt)
		h.SetDataSN(dataSN) // ExpDataSN: Data-In PDUs sent
		var sense []byte
		if len(res.Sense) > 0 {
			sense = make([]byte, 2+len(res.Sense))
			binary.BigEndian.PutUint16(sense, uint16(len(res.Sense))) // SenseLength prefix
			copy(sense[2:], res.Sense)
		}
		it.pdus = append(it.pdus, txPDU{h: h, data: sense, sn: snAdvance})
	}
	return it
}
