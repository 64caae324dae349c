package iscsi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"opensan/gateway/block"
	"opensan/gateway/scsi"
)

// gatedDevice is a memory device whose reads wait, while a gate is set, until the gate is closed.
type gatedDevice struct {
	*block.Memory
	mu      sync.Mutex
	gate    chan struct{}
	entered chan struct{} // a read is waiting at the gate
}

func (d *gatedDevice) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	g := d.gate
	d.mu.Unlock()
	if g != nil {
		d.entered <- struct{}{}
		<-g
	}
	return d.Memory.ReadAt(p, off)
}

func (d *gatedDevice) setGate(g chan struct{}) {
	d.mu.Lock()
	d.gate = g
	d.mu.Unlock()
}

// startServerDev serves dev as LUN 0 of testIQN.
func startServerDev(t testing.TB, cfg Config, dev block.Device) *testEnv {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := NewServer(cfg)
	st := scsi.NewTarget(testIQN)
	if err := st.AddLU(0, scsi.LUConfig{Device: dev}); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddTarget(TargetConfig{Name: testIQN, SCSI: st}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{srv: srv, addr: l.Addr().String(), tgt: st, done: make(chan error, 1)}
	go func() { env.done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-env.done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return env
}

// forceInline makes every unit look fast enough to run inline, whatever the race detector costs, and
// lets a stuck reader be replaced after stall.
func forceInline(t *testing.T, stall time.Duration) {
	oldMax, oldStall := inlineMaxNs, inlineStall
	inlineMaxNs, inlineStall = int64(time.Hour), stall
	t.Cleanup(func() { inlineMaxNs, inlineStall = oldMax, oldStall })
}

// onlySession returns the server's one session.
func onlySession(t testing.TB, srv *Server) *session {
	t.Helper()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.sessions) != 1 {
		t.Fatalf("%d sessions", len(srv.sessions))
	}
	for _, s := range srv.sessions {
		return s
	}
	return nil
}

// cmdPDU builds a SCSI Command PDU for one-block READ(10)/WRITE(10) of bs bytes, with immediate data for
// writes.
func (i *testInitiator) cmdPDU(cdb []byte, out []byte, readLen uint32) *PDU {
	p := &PDU{Data: out}
	h := &p.BHS
	h.SetOpcode(OpSCSICmd)
	flags := uint8(FlagFinal | byte(scsi.Simple))
	edtl := readLen
	if out != nil {
		flags |= FlagWrite
		edtl = uint32(len(out))
	} else {
		flags |= FlagRead
	}
	h.SetFlags(flags)
	h.SetITT(i.nextITT())
	binary.BigEndian.PutUint32(h[20:], edtl)
	h.SetCmdSN(i.cmdSN)
	h.SetExpStatSN(i.expStatSN)
	i.cmdSN++
	copy(h[32:], cdb)
	return p
}

// TestInlinePipelined runs READs and WRITEs one at a time and many at once on a session whose reader
// executes them itself, and checks data, statuses and that StatSN stays consecutive over the batched
// responses.
func TestInlinePipelined(t *testing.T) {
	forceInline(t, time.Minute)
	env := startServer(t, Config{}, TargetConfig{Name: testIQN})
	i := dialInitiator(t, env.addr, 1)
	if st := i.login(loginOpts{target: testIQN}); st != 0 {
		t.Fatalf("login 0x%04x", st)
	}
	i.ready(0)
	for k := 0; k < 40; k++ {
		data := pattern(1024, byte(k))
		if r := i.command(0, write10(uint32(2*k), 2), data, 0); r.status != scsi.StatusGood {
			t.Fatalf("WRITE %d: status 0x%02x", k, r.status)
		}
		if r := i.command(0, read10(uint32(2*k), 2), nil, 1024); r.status != scsi.StatusGood || !bytes.Equal(r.data, data) {
			t.Fatalf("READ %d: status 0x%02x equal=%v", k, r.status, bytes.Equal(r.data, data))
		}
	}
	s := onlySession(t, env.srv)
	if n := s.inlined.Load(); n == 0 {
		t.Fatal("no command ran inline")
	}

	// 32 writes sent back to back, then 32 reads: the reader answers what arrived together in batches.
	const depth = 32
	var sent bytes.Buffer
	itts := map[uint32]int{}
	for k := 0; k < depth; k++ {
		p := i.cmdPDU(write10(uint32(200+8*k), 8), pattern(4096, byte(100+k)), 0)
		itts[p.BHS.ITT()] = k
		if err := WritePDU(&sent, p, i.d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := i.c.Write(sent.Bytes()); err != nil {
		t.Fatal(err)
	}
	lastSN := i.expStatSN - 1
	for n := 0; n < depth; n++ {
		r := i.recv()
		if r.BHS.Opcode() != OpSCSIResp || r.BHS.Status() != scsi.StatusGood {
			t.Fatalf("write response %s status 0x%02x", opName(r.BHS.Opcode()), r.BHS.Status())
		}
		if _, ok := itts[r.BHS.ITT()]; !ok {
			t.Fatalf("response for unknown or repeated ITT %d", r.BHS.ITT())
		}
		delete(itts, r.BHS.ITT())
		if r.BHS.StatSN() != lastSN+1 {
			t.Fatalf("StatSN %d after %d", r.BHS.StatSN(), lastSN)
		}
		lastSN = r.BHS.StatSN()
	}
	sent.Reset()
	for k := 0; k < depth; k++ {
		p := i.cmdPDU(read10(uint32(200+8*k), 8), nil, 4096)
		itts[p.BHS.ITT()] = k
		if err := WritePDU(&sent, p, i.d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := i.c.Write(sent.Bytes()); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < depth; n++ {
		r := i.recv()
		k, ok := itts[r.BHS.ITT()]
		if r.BHS.Opcode() != OpDataIn || r.BHS.Flags()&FlagStatus == 0 || !ok {
			t.Fatalf("read answer %s flags 0x%02x ITT %d", opName(r.BHS.Opcode()), r.BHS.Flags(), r.BHS.ITT())
		}
		delete(itts, r.BHS.ITT())
		if !bytes.Equal(r.Data, pattern(4096, byte(100+k))) {
			t.Fatalf("read %d: wrong data", k)
		}
		if r.BHS.StatSN() != lastSN+1 {
			t.Fatalf("StatSN %d after %d", r.BHS.StatSN(), lastSN)
		}
		lastSN = r.BHS.StatSN()
	}
	if s.execNs.Load() >= inlineMaxNs {
		t.Fatal("session left inline mode")
	}
	i.logout()
}

// TestInlineStuckReaderTakeover blocks a READ the reader runs itself and checks that another goroutine
// takes the reader role: a NOP-Out is answered while the READ hangs, the READ is answered once the device
// returns, and the session goes on.
func TestInlineStuckReaderTakeover(t *testing.T) {
	forceInline(t, 100*time.Millisecond)
	dev := &gatedDevice{Memory: block.NewMemory(8<<20, 512), entered: make(chan struct{}, 1)}
	env := startServerDev(t, Config{}, dev)
	i := dialInitiator(t, env.addr, 1)
	if st := i.login(loginOpts{target: testIQN}); st != 0 {
		t.Fatalf("login 0x%04x", st)
	}
	i.ready(0)
	data := pattern(512, 9)
	if r := i.command(0, write10(3, 1), data, 0); r.status != scsi.StatusGood {
		t.Fatalf("WRITE: 0x%02x", r.status)
	}
	for k := 0; k < 30; k++ { // long enough for the session to go inline
		if r := i.command(0, read10(3, 1), nil, 512); r.status != scsi.StatusGood {
			t.Fatalf("READ: 0x%02x", r.status)
		}
	}
	s := onlySession(t, env.srv)
	before := s.inlined.Load()
	if before == 0 {
		t.Fatal("no command ran inline")
	}

	gate := make(chan struct{})
	dev.setGate(gate)
	release := sync.OnceFunc(func() { dev.setGate(nil); close(gate) })
	t.Cleanup(release) // before the server's shutdown, which waits for the READ
	stuck := i.cmdPDU(read10(3, 1), nil, 512)
	i.send(stuck)
	select {
	case <-dev.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("READ never reached the device")
	}
	// The READ hangs in the reader. Once the stall has been noticed, a NOP-Out must be answered.
	deadline := time.Now().Add(5 * time.Second)
	for s.takeovers.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("stuck reader not replaced")
		}
		time.Sleep(10 * time.Millisecond)
	}
	nop := &PDU{Data: []byte("ping")}
	nop.BHS.SetOpcode(OpNOPOut)
	nop.BHS.SetImmediate(true)
	nop.BHS.SetFlags(FlagFinal)
	nop.BHS.SetITT(i.nextITT())
	nop.BHS.SetTTT(ReservedTag)
	nop.BHS.SetCmdSN(i.cmdSN)
	nop.BHS.SetExpStatSN(i.expStatSN)
	i.send(nop)
	r := i.recv()
	if r.BHS.Opcode() != OpNOPIn || r.BHS.ITT() != nop.BHS.ITT() || string(r.Data) != "ping" {
		t.Fatalf("got %s ITT %d while the READ hangs, want the NOP-In", opName(r.BHS.Opcode()), r.BHS.ITT())
	}

	release()
	r = i.recv()
	if r.BHS.Opcode() != OpDataIn || r.BHS.ITT() != stuck.BHS.ITT() || r.BHS.Flags()&FlagStatus == 0 || !bytes.Equal(r.Data, data) {
		t.Fatalf("stuck READ answered with %s ITT %d flags 0x%02x", opName(r.BHS.Opcode()), r.BHS.ITT(), r.BHS.Flags())
	}
	if s.inlined.Load() != before {
		t.Fatal("the stuck READ counted as answered inline")
	}
	// The new reader carries on, inline again.
	for k := 0; k < 5; k++ {
		if r := i.command(0, read10(3, 1), nil, 512); r.status != scsi.StatusGood || !bytes.Equal(r.data, data) {
			t.Fatalf("READ after takeover: 0x%02x", r.status)
		}
	}
	if s.inlined.Load() == before {
		t.Fatal("the new reader does not run commands inline")
	}
	i.logout()
}

// TestMayBlock pins what counts as a whole PDU in the reader's buffer: BHS, AHS, header digest, data,
// padding and data digest.
func TestMayBlock(t *testing.T) {
	var h BHS
	h.SetOpcode(OpSCSICmd)
	h.SetTotalAHSLength(8)
	h.SetDataSegmentLength(5) // padded to 8
	for _, c := range []struct {
		d     Digests
		have  int
		block bool
	}{
		{Digests{}, 0, true},
		{Digests{}, BHSLen - 1, true},
		{Digests{}, BHSLen + 8 + 7, true},
		{Digests{}, BHSLen + 8 + 8, false},
		{Digests{Header: true}, BHSLen + 8 + 8, true},
		{Digests{Header: true}, BHSLen + 8 + 4 + 8, false},
		{Digests{Header: true, Data: true}, BHSLen + 8 + 4 + 8 + 3, true},
		{Digests{Header: true, Data: true}, BHSLen + 8 + 4 + 8 + 4, false},
	} {
		buf := make([]byte, c.have)
		copy(buf, h[:])
		s := &session{digests: c.d, br: bufio.NewReader(bytes.NewReader(buf))}
		if c.have > 0 {
			s.br.Peek(c.have) // fill the buffer the way earlier reads would have
		}
		if got := s.mayBlock(); got != c.block {
			t.Errorf("digests %+v, %d bytes buffered: mayBlock %v, want %v", c.d, c.have, got, c.block)
		}
	}
	// A header without data needs no data digest.
	h.SetTotalAHSLength(0)
	h.SetDataSegmentLength(0)
	s := &session{digests: Digests{Data: true}, br: bufio.NewReader(bytes.NewReader(h[:]))}
	s.br.Peek(BHSLen)
	if s.mayBlock() {
		t.Error("a bare BHS is a whole PDU")
	}
}

// BenchmarkReadQD1 measures one 4 KiB READ at a time over loopback TCP, end to end through the test
// initiator (run with -benchmem to see the allocations per command, both sides included).
func BenchmarkReadQD1(b *testing.B) {
	env := startServerDev(b, Config{}, block.NewMemory(8<<20, 512))
	i := dialInitiator(b, env.addr, 1)
	if st := i.login(loginOpts{target: testIQN}); st != 0 {
		b.Fatalf("login 0x%04x", st)
	}
	i.ready(0)
	p := i.cmdPDU(read10(0, 8), nil, 4096)
	i.cmdSN-- // the loop numbers the commands
	var wire bytes.Buffer
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		p.BHS.SetITT(uint32(n))
		p.BHS.SetCmdSN(i.cmdSN)
		i.cmdSN++
		wire.Reset()
		WritePDU(&wire, p, i.d)
		if _, err := i.c.Write(wire.Bytes()); err != nil {
			b.Fatal(err)
		}
		i.c.SetDeadline(time.Now().Add(3 * time.Second))
		r, err := ReadPDU(i.c, i.d, 1<<20)
		if err != nil {
			ss := onlySession(b, env.srv)
			ss.mu.Lock()
			msg := fmt.Sprintf("n=%d: %v; tasks %d rqLen %d inlined %d execNs %d expCmdSN %d active %d", n, err, len(ss.tasks), ss.rqLen.Load(), ss.inlined.Load(), ss.execNs.Load(), ss.expCmdSN, ss.active)
			ss.mu.Unlock()
			b.Fatal(msg)
		}
		for r.BHS.Opcode() == OpNOPIn && r.BHS.ITT() == ReservedTag {
			r = i.recv() // a ping: the target's NOP-In interval passed
		}
		if r.BHS.Opcode() != OpDataIn || r.BHS.Flags()&FlagStatus == 0 {
			b.Fatalf("got %s", opName(r.BHS.Opcode()))
		}
	}
}
