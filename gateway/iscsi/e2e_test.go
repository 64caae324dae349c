package iscsi

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"opensan/gateway/block"
	"opensan/gateway/scsi"
)

// testInitiator is a small iSCSI initiator for end-to-end tests: one connection, synchronous commands.
type testInitiator struct {
	t         testing.TB
	c         net.Conn
	d         Digests
	isid      [6]byte
	itt       uint32
	cmdSN     uint32
	expStatSN uint32
	maxCmdSN  uint32
	// negotiated
	immediate   bool
	initialR2T  bool
	firstBurst  int
	targetMRDSL int
}

func dialInitiator(t testing.TB, addr string, isid byte) *testInitiator {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &testInitiator{t: t, c: c, isid: [6]byte{0x80, 0, 0, 0, 0, isid}, cmdSN: 1, targetMRDSL: 8192, firstBurst: 65536, initialR2T: true, immediate: true}
}

func (i *testInitiator) send(p *PDU) {
	i.t.Helper()
	if err := WritePDU(i.c, p, i.d); err != nil {
		i.t.Fatalf("send %s: %v", opName(p.BHS.Opcode()), err)
	}
}

func (i *testInitiator) recv() *PDU {
	i.t.Helper()
	p, err := ReadPDU(i.c, i.d, 16<<20)
	if err != nil {
		i.t.Fatalf("recv: %v", err)
	}
	switch p.BHS.Opcode() {
	case OpSCSIResp, OpTaskMgmtResp, OpTextResp, OpLogoutResp, OpReject, OpAsyncMsg:
		i.expStatSN = p.BHS.StatSN() + 1
	case OpNOPIn:
		if p.BHS.ITT() != ReservedTag {
			i.expStatSN = p.BHS.StatSN() + 1
		}
	case OpDataIn:
		if p.BHS.Flags()&FlagStatus != 0 {
			i.expStatSN = p.BHS.StatSN() + 1
		}
	}
	if p.BHS.Opcode() != OpLoginResp {
		i.maxCmdSN = p.BHS.MaxCmdSN()
	}
	return p
}

// loginStep sends one login request and returns the response and its keys.
func (i *testInitiator) loginStep(csg, nsg uint8, transit bool, kvs ...KV) (*PDU, map[string]string) {
	p := loginReq(csg, nsg, transit, false, kvs...)
	p.BHS.SetISID(i.isid)
	p.BHS.SetCmdSN(i.cmdSN)
	p.BHS.SetExpStatSN(i.expStatSN)
	i.send(p)
	r, err := ReadPDU(i.c, Digests{}, 1<<16)
	if err != nil {
		i.t.Fatalf("login response: %v", err)
	}
	i.expStatSN = r.BHS.StatSN() + 1
	kv, err := ParseText(r.Data)
	if err != nil {
		i.t.Fatal(err)
	}
	return r, answers(kv)
}

type loginOpts struct {
	target       string // empty: discovery
	digests      bool
	chapUser     string
	chapSecret   string
	mutualSecret string
	ops          []KV
}

// login performs a full login and returns the final status.
func (i *testInitiator) login(o loginOpts) LoginStatus {
	i.t.Helper()
	lead := []KV{{"InitiatorName", testInit}}
	if o.target == "" {
		lead = append(lead, KV{"SessionType", "Discovery"})
	} else {
		lead = append(lead, KV{"SessionType", "Normal"}, KV{"TargetName", o.target})
	}
	if o.chapUser == "" {
		r, _ := i.loginStep(0, 1, true, append(lead, KV{"AuthMethod", "None"})...)
		if st := LoginStatus(r.BHS.StatusClass())<<8 | LoginStatus(r.BHS.StatusDetail()); st != 0 {
			return st
		}
	} else {
		r, a := i.loginStep(0, 1, false, append(lead, KV{"AuthMethod", "CHAP"})...)
		if st := LoginStatus(r.BHS.StatusClass())<<8 | LoginStatus(r.BHS.StatusDetail()); st != 0 {
			return st
		}
		if a["AuthMethod"] != "CHAP" {
			i.t.Fatalf("AuthMethod answer %q", a["AuthMethod"])
		}
		r, a = i.loginStep(0, 1, false, KV{"CHAP_A", "5"})
		id, _ := strconv.Atoi(a["CHAP_I"])
		ch, _ := parseBinary(a["CHAP_C"])
		sum := md5.Sum(append(append([]byte{byte(id)}, o.chapSecret...), ch...))
		resp := []KV{{"CHAP_N", o.chapUser}, {"CHAP_R", encodeHex(sum[:])}}
		myCh := bytes.Repeat([]byte{0x5a}, 16)
		if o.mutualSecret != "" {
			resp = append(resp, KV{"CHAP_I", "33"}, KV{"CHAP_C", encodeHex(myCh)})
		}
		r, a = i.loginStep(0, 1, true, resp...)
		if st := LoginStatus(r.BHS.StatusClass())<<8 | LoginStatus(r.BHS.StatusDetail()); st != 0 {
			return st
		}
		if o.mutualSecret != "" {
			want := md5.Sum(append(append([]byte{33}, o.mutualSecret...), myCh...))
			if a["CHAP_R"] != encodeHex(want[:]) {
				i.t.Fatalf("mutual CHAP: target answered %q", a["CHAP_R"])
			}
		}
	}
	ops := []KV{{"MaxRecvDataSegmentLength", "65536"}}
	if o.digests {
		ops = append(ops, KV{"HeaderDigest", "CRC32C"}, KV{"DataDigest", "CRC32C"})
	}
	if o.target != "" {
		ops = append(ops, KV{"InitialR2T", "No"}, KV{"ImmediateData", "Yes"}, KV{"FirstBurstLength", "16384"},
			KV{"MaxBurstLength", "32768"}, KV{"MaxOutstandingR2T", "4"})
	}
	ops = append(ops, o.ops...)
	r, a := i.loginStep(1, 3, true, ops...)
	if st := LoginStatus(r.BHS.StatusClass())<<8 | LoginStatus(r.BHS.StatusDetail()); st != 0 {
		return st
	}
	if !r.BHS.Transit() || r.BHS.NSG() != 3 || r.BHS.TSIH() == 0 {
		i.t.Fatalf("final login response flags 0x%02x TSIH %d", r.BHS.Flags(), r.BHS.TSIH())
	}
	i.maxCmdSN = r.BHS.MaxCmdSN()
	if o.digests {
		i.d = Digests{Header: a["HeaderDigest"] == "CRC32C", Data: a["DataDigest"] == "CRC32C"}
	}
	if n, err := strconv.Atoi(a["MaxRecvDataSegmentLength"]); err == nil {
		i.targetMRDSL = n
	}
	if o.target != "" {
		i.initialR2T = a["InitialR2T"] == "Yes"
		i.immediate = a["ImmediateData"] == "Yes"
		i.firstBurst, _ = strconv.Atoi(a["FirstBurstLength"])
	}
	return LoginSuccess
}

type cmdResult struct {
	status   byte
	data     []byte
	sense    []byte
	flags    uint8
	residual uint32
}

func (i *testInitiator) nextITT() uint32 { i.itt++; return i.itt }

// command runs one SCSI command to completion, handling immediate/unsolicited data, R2Ts and Data-In.
func (i *testInitiator) command(lun uint64, cdb []byte, out []byte, readLen uint32) cmdResult {
	i.t.Helper()
	itt := i.nextITT()
	p := &PDU{}
	h := &p.BHS
	h.SetOpcode(OpSCSICmd)
	flags := uint8(FlagFinal | byte(scsi.Simple))
	edtl := readLen
	if out != nil {
		flags |= FlagWrite
		edtl = uint32(len(out))
	}
	if readLen > 0 {
		flags |= FlagRead
	}
	h.SetLUNField(encodeLUN(lun))
	h.SetITT(itt)
	binary.BigEndian.PutUint32(h[20:], edtl)
	h.SetCmdSN(i.cmdSN)
	h.SetExpStatSN(i.expStatSN)
	i.cmdSN++
	copy(h[32:], cdb)
	if len(cdb) > 16 {
		p.AHS = AppendAHS(nil, AHSExtendedCDB, append([]byte{0}, cdb[16:]...))
	}
	unsol := 0
	if out != nil {
		if i.immediate {
			unsol = min(len(out), i.firstBurst, i.targetMRDSL)
			p.Data = out[:unsol]
		}
		if !i.initialR2T && len(out) > unsol && unsol < i.firstBurst {
			flags &^= FlagFinal // unsolicited Data-Out follows
		}
	}
	h.SetFlags(flags)
	i.send(p)
	if flags&FlagFinal == 0 {
		end := min(len(out), i.firstBurst)
		var sn uint32
		for off := unsol; off < end; {
			n := min(end-off, i.targetMRDSL)
			i.dataOut(itt, ReservedTag, sn, off, out[off:off+n], off+n == end)
			sn++
			off += n
		}
	}
	var res cmdResult
	for {
		r := i.recv()
		switch r.BHS.Opcode() {
		case OpR2T:
			if r.BHS.ITT() != itt {
				i.t.Fatalf("R2T for ITT %d", r.BHS.ITT())
			}
			off, n := int(r.BHS.BufferOffset()), int(r.BHS.DesiredDataLength())
			var sn uint32
			for done := 0; done < n; {
				m := min(n-done, i.targetMRDSL)
				i.dataOut(itt, r.BHS.TTT(), sn, off+done, out[off+done:off+done+m], done+m == n)
				sn++
				done += m
			}
		case OpDataIn:
			off := int(r.BHS.BufferOffset())
			if off != len(res.data) {
				i.t.Fatalf("Data-In offset %d after %d bytes", off, len(res.data))
			}
			res.data = append(res.data, r.Data...)
			if r.BHS.Flags()&FlagStatus != 0 {
				res.status = r.BHS.Status()
				res.flags = r.BHS.Flags() & (FlagOverflow | FlagUnderflow)
				res.residual = r.BHS.ResidualCount()
				return res
			}
		case OpSCSIResp:
			res.status = r.BHS.Status()
			res.flags = r.BHS.Flags() & (FlagOverflow | FlagUnderflow | FlagBiOver | FlagBiUnder)
			res.residual = r.BHS.ResidualCount()
			if len(r.Data) >= 2 {
				n := int(binary.BigEndian.Uint16(r.Data))
				res.sense = r.Data[2 : 2+n]
			}
			return res
		case OpNOPIn, OpAsyncMsg:
		default:
			i.t.Fatalf("unexpected %s (reason %d)", opName(r.BHS.Opcode()), r.BHS.Response())
		}
	}
}

func (i *testInitiator) dataOut(itt, ttt, sn uint32, off int, data []byte, final bool) {
	d := &PDU{Data: data}
	d.BHS.SetOpcode(OpDataOut)
	if final {
		d.BHS.SetFlags(FlagFinal)
	}
	d.BHS.SetITT(itt)
	d.BHS.SetTTT(ttt)
	d.BHS.SetExpStatSN(i.expStatSN)
	d.BHS.SetDataSN(sn)
	d.BHS.SetBufferOffset(uint32(off))
	i.send(d)
}

// ready clears the power-on unit attention every new nexus starts with.
func (i *testInitiator) ready(lun uint64) {
	i.t.Helper()
	for n := 0; n < 4; n++ {
		if r := i.command(lun, []byte{0x00, 0, 0, 0, 0, 0}, nil, 0); r.status == scsi.StatusGood {
			return
		}
	}
	i.t.Fatal("TEST UNIT READY never succeeded")
}

func read10(lba uint32, blocks uint16) []byte {
	c := make([]byte, 10)
	c[0] = 0x28
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

func write10(lba uint32, blocks uint16) []byte {
	c := read10(lba, blocks)
	c[0] = 0x2a
	return c
}

func (i *testInitiator) logout() {
	i.t.Helper()
	p := &PDU{}
	p.BHS.SetOpcode(OpLogoutReq)
	p.BHS.SetImmediate(true)
	p.BHS.SetFlags(FlagFinal)
	p.BHS.SetITT(i.nextITT())
	p.BHS.SetCmdSN(i.cmdSN)
	p.BHS.SetExpStatSN(i.expStatSN)
	i.send(p)
	for {
		r := i.recv()
		if r.BHS.Opcode() == OpLogoutResp {
			if r.BHS.Response() != 0 {
				i.t.Fatalf("logout response %d", r.BHS.Response())
			}
			break
		}
	}
	if _, err := ReadPDU(i.c, i.d, 1<<16); !errors.Is(err, io.EOF) {
		i.t.Fatalf("connection not closed after logout: %v", err)
	}
	i.c.Close()
}

type testEnv struct {
	srv  *Server
	addr string
	tgt  *scsi.Target
	mem  *block.Memory
	done chan error
}

func startServer(t *testing.T, cfg Config, tcs ...TargetConfig) *testEnv {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv := NewServer(cfg)
	env := &testEnv{srv: srv, done: make(chan error, 1)}
	for n, tc := range tcs {
		st := scsi.NewTarget(tc.Name)
		mem := block.NewMemory(8<<20, 512)
		if err := st.AddLU(0, scsi.LUConfig{Device: mem}); err != nil {
			t.Fatal(err)
		}
		tc.SCSI = st
		if n == 0 {
			env.tgt, env.mem = st, mem
		}
		if err := srv.AddTarget(tc); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env.addr = l.Addr().String()
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

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for k := range b {
		b[k] = seed + byte(k*7)
	}
	return b
}

func TestEndToEndReadWrite(t *testing.T) {
	for _, digests := range []bool{false, true} {
		t.Run(fmt.Sprintf("digests=%v", digests), func(t *testing.T) {
			env := startServer(t, Config{}, TargetConfig{Name: testIQN})
			i := dialInitiator(t, env.addr, 1)
			if st := i.login(loginOpts{target: testIQN, digests: digests}); st != 0 {
				t.Fatalf("login 0x%04x", st)
			}
			if digests && (!i.d.Header || !i.d.Data) {
				t.Fatal("digests not negotiated")
			}
			i.ready(0)
			// 512 bytes: immediate data only. 100 KiB: immediate + unsolicited + several R2Ts of 32 KiB.
			for _, blocks := range []uint16{1, 200} {
				data := pattern(int(blocks)*512, byte(blocks))
				if r := i.command(0, write10(8, blocks), data, 0); r.status != scsi.StatusGood {
					t.Fatalf("WRITE(10) %d blocks: status 0x%02x sense % x", blocks, r.status, r.sense)
				}
				r := i.command(0, read10(8, blocks), nil, uint32(len(data)))
				if r.status != scsi.StatusGood || !bytes.Equal(r.data, data) {
					t.Fatalf("READ(10) %d blocks: status 0x%02x, %d bytes, equal=%v", blocks, r.status, len(r.data), bytes.Equal(r.data, data))
				}
				got := make([]byte, len(data))
				env.mem.ReadAt(got, 8*512)
				if !bytes.Equal(got, data) {
					t.Fatal("device content differs")
				}
			}
			// Residuals: READ(10) of 1 block with room for 2 (underflow) and for 200 bytes (overflow).
			if r := i.command(0, read10(0, 1), nil, 1024); r.status != 0 || r.flags != FlagUnderflow || r.residual != 512 || len(r.data) != 512 {
				t.Fatalf("underflow: %+v", r)
			}
			if r := i.command(0, read10(0, 1), nil, 200); r.status != 0 || r.flags != FlagOverflow || r.residual != 312 || len(r.data) != 200 {
				t.Fatalf("overflow: status %d flags %x residual %d len %d", r.status, r.flags, r.residual, len(r.data))
			}
			// A CHECK CONDITION carries sense data in the SCSI Response (LBA out of range).
			if r := i.command(0, read10(1<<30, 1), nil, 512); r.status != scsi.StatusCheckCondition || len(r.sense) < 14 || r.sense[2]&0xf != 5 {
				t.Fatalf("out of range read: %+v", r)
			}
			i.logout()
		})
	}
}

func TestEndToEndNOPAndText(t *testing.T) {
	env := startServer(t, Config{}, TargetConfig{Name: testIQN})
	i := dialInitiator(t, env.addr, 1)
	if st := i.login(loginOpts{target: testIQN}); st != 0 {
		t.Fatalf("login 0x%04x", st)
	}
	p := &PDU{Data: []byte("ping")}
	p.BHS.SetOpcode(OpNOPOut)
	p.BHS.SetImmediate(true)
	p.BHS.SetFlags(FlagFinal)
	p.BHS.SetITT(i.nextITT())
	p.BHS.SetTTT(ReservedTag)
	p.BHS.SetCmdSN(i.cmdSN)
	i.send(p)
	r := i.recv()
	if r.BHS.Opcode() != OpNOPIn || r.BHS.ITT() != p.BHS.ITT() || string(r.Data) != "ping" || r.BHS.TTT() != ReservedTag {
		t.Fatalf("NOP-In: %s %q", opName(r.BHS.Opcode()), r.Data)
	}
	// Unknown opcode: Reject, command not supported; the session goes on.
	bad := &PDU{}
	bad.BHS.SetOpcode(0x1c)
	bad.BHS.SetImmediate(true)
	i.send(bad)
	if r := i.recv(); r.BHS.Opcode() != OpReject || r.BHS.RejectReason() != RejectNotSupported || len(r.Data) != 48 || r.Data[0]&0x3f != 0x1c {
		t.Fatalf("reject: %s reason %d", opName(r.BHS.Opcode()), r.BHS.RejectReason())
	}
	txt := &PDU{Data: AppendText(nil, KV{"SendTargets", "All"}, KV{"Bogus", "1"})}
	txt.BHS.SetOpcode(OpTextReq)
	txt.BHS.SetFlags(FlagFinal)
	txt.BHS.SetITT(i.nextITT())
	txt.BHS.SetTTT(ReservedTag)
	txt.BHS.SetCmdSN(i.cmdSN)
	i.cmdSN++
	i.send(txt)
	r = i.recv()
	a := answers(mustParse(t, r.Data))
	if r.BHS.Opcode() != OpTextResp || !r.BHS.Final() || a["TargetName"] != testIQN || a["TargetAddress"] != env.addr+",1" || a["Bogus"] != "NotUnderstood" {
		t.Fatalf("text response %v", a)
	}
	i.logout()
}

func TestEndToEndDiscoveryACLAndCHAP(t *testing.T) {
	chap := &CHAPConfig{User: "alice", Secret: "alicesecret1", MutualUser: "tgt", MutualSecret: "targetsecret"}
	env := startServer(t, Config{Portals: []string{"192.0.2.1:3260", "[2001:db8::1]:3260"}},
		TargetConfig{Name: testIQN},
		TargetConfig{Name: "iqn.2026-01.test:hidden", Allow: []string{"iqn.2026-01.test:someone-else"}},
		TargetConfig{Name: "iqn.2026-01.test:chap", CHAP: chap},
	)
	discover := func(o loginOpts) []KV {
		i := dialInitiator(t, env.addr, 9)
		if st := i.login(o); st != 0 {
			t.Fatalf("discovery login 0x%04x", st)
		}
		txt := &PDU{Data: AppendText(nil, KV{"SendTargets", "All"})}
		txt.BHS.SetOpcode(OpTextReq)
		txt.BHS.SetImmediate(true)
		txt.BHS.SetFlags(FlagFinal)
		txt.BHS.SetITT(i.nextITT())
		txt.BHS.SetTTT(ReservedTag)
		txt.BHS.SetCmdSN(i.cmdSN)
		i.send(txt)
		r := i.recv()
		i.logout()
		return mustParse(t, r.Data)
	}
	got := discover(loginOpts{})
	want := []KV{{"TargetName", testIQN}, {"TargetAddress", "192.0.2.1:3260,1"}, {"TargetAddress", "[2001:db8::1]:3260,1"}}
	if !equalKVs(got, want) {
		t.Fatalf("SendTargets without CHAP: %v", got)
	}
	got = discover(loginOpts{chapUser: "alice", chapSecret: "alicesecret1", mutualSecret: "targetsecret"})
	if len(got) != 6 || got[3] != (KV{"TargetName", "iqn.2026-01.test:chap"}) {
		t.Fatalf("SendTargets after CHAP: %v", got)
	}

	// Normal sessions: CHAP required, wrong secret refused, right secret (mutual) accepted.
	i := dialInitiator(t, env.addr, 2)
	if st := i.login(loginOpts{target: "iqn.2026-01.test:chap"}); st != LoginAuthFailure {
		t.Fatalf("no CHAP: 0x%04x", st)
	}
	i = dialInitiator(t, env.addr, 2)
	if st := i.login(loginOpts{target: "iqn.2026-01.test:chap", chapUser: "alice", chapSecret: "wrong"}); st != LoginAuthFailure {
		t.Fatalf("wrong secret: 0x%04x", st)
	}
	i = dialInitiator(t, env.addr, 2)
	if st := i.login(loginOpts{target: "iqn.2026-01.test:chap", chapUser: "alice", chapSecret: "alicesecret1", mutualSecret: "targetsecret"}); st != 0 {
		t.Fatalf("mutual CHAP: 0x%04x", st)
	}
	i.ready(0)
	i.logout()
	i = dialInitiator(t, env.addr, 3)
	if st := i.login(loginOpts{target: "iqn.2026-01.test:hidden"}); st != LoginForbidden {
		t.Fatalf("ACL: 0x%04x", st)
	}
	i = dialInitiator(t, env.addr, 3)
	if st := i.login(loginOpts{target: "iqn.2026-01.test:absent"}); st != LoginNotFound {
		t.Fatalf("absent target: 0x%04x", st)
	}
}

// TestEndToEndAbortWaitingTask aborts a WRITE that waits for Data-Out: the TMF answers Function
// Complete, the write gets no response, and the session keeps working.
func TestEndToEndAbortWaitingTask(t *testing.T) {
	env := startServer(t, Config{}, TargetConfig{Name: testIQN})
	i := dialInitiator(t, env.addr, 1)
	if st := i.login(loginOpts{target: testIQN, ops: nil}); st != 0 {
		t.Fatalf("login 0x%04x", st)
	}
	i.ready(0)
	itt := i.nextITT()
	p := &PDU{}
	p.BHS.SetOpcode(OpSCSICmd)
	p.BHS.SetFlags(FlagFinal | FlagWrite)
	p.BHS.SetITT(itt)
	binary.BigEndian.PutUint32(p.BHS[20:], 65536)
	p.BHS.SetCmdSN(i.cmdSN)
	i.cmdSN++
	copy(p.BHS[32:], write10(0, 128))
	i.send(p)
	if r := i.recv(); r.BHS.Opcode() != OpR2T || r.BHS.ITT() != itt || r.BHS.BufferOffset() != 0 || r.BHS.DesiredDataLength() != 32768 {
		t.Fatalf("expected R2T at 0 for 32768, got %s off %d len %d", opName(r.BHS.Opcode()), r.BHS.BufferOffset(), r.BHS.DesiredDataLength())
	}
	// Several R2Ts outstanding (MaxOutstandingR2T=4): the second covers the rest.
	if r := i.recv(); r.BHS.Opcode() != OpR2T || r.BHS.BufferOffset() != 32768 || r.BHS.DataSN() != 1 {
		t.Fatalf("second R2T: %s off %d R2TSN %d", opName(r.BHS.Opcode()), r.BHS.BufferOffset(), r.BHS.DataSN())
	}
	tmf := &PDU{}
	tmf.BHS.SetOpcode(OpTaskMgmtReq)
	tmf.BHS.SetImmediate(true)
	tmf.BHS.SetFlags(FlagFinal | TMFAbortTask)
	tmf.BHS.SetITT(i.nextITT())
	tmf.BHS.SetTTT(itt) // Referenced Task Tag (bytes 20-23)
	tmf.BHS.SetCmdSN(i.cmdSN)
	i.send(tmf)
	r := i.recv()
	if r.BHS.Opcode() != OpTaskMgmtResp || r.BHS.Response() != tmfRespComplete {
		t.Fatalf("TMF: %s response %d", opName(r.BHS.Opcode()), r.BHS.Response())
	}
	// A late Data-Out for the aborted task is dropped silently.
	i.dataOut(itt, 1, 0, 0, make([]byte, 4096), false)
	tmf.BHS.SetITT(i.nextITT())
	i.send(tmf)
	if r := i.recv(); r.BHS.Opcode() != OpTaskMgmtResp || r.BHS.Response() != tmfRespNoTask {
		t.Fatalf("second abort: %s response %d", opName(r.BHS.Opcode()), r.BHS.Response())
	}
	for _, fn := range []struct {
		f    uint8
		want uint8
	}{{TMFLUNReset, tmfRespComplete}, {TMFTaskReassign, tmfRespReassignNotSup}, {TMFClearACA, tmfRespNotSupported}, {0x55, tmfRespRejected}} {
		tmf.BHS.SetFlags(FlagFinal | fn.f)
		tmf.BHS.SetITT(i.nextITT())
		i.send(tmf)
		if r := i.recv(); r.BHS.Opcode() != OpTaskMgmtResp || r.BHS.Response() != fn.want {
			t.Fatalf("TMF %d: %s response %d, want %d", fn.f, opName(r.BHS.Opcode()), r.BHS.Response(), fn.want)
		}
	}
	i.ready(0) // the LUN reset left a unit attention
	if r := i.command(0, read10(0, 1), nil, 512); r.status != 0 {
		t.Fatalf("read after abort: %+v", r)
	}
	i.logout()
}

// TestEndToEndConnectionResetIsolation drops one session's TCP connection mid-command and checks a
// second session keeps working, and that protocol errors close only the offending connection.
func TestEndToEndConnectionResetIsolation(t *testing.T) {
	env := startServer(t, Config{}, TargetConfig{Name: testIQN})
	a := dialInitiator(t, env.addr, 1)
	b := dialInitiator(t, env.addr, 2)
	for _, i := range []*testInitiator{a, b} {
		if st := i.login(loginOpts{target: testIQN}); st != 0 {
			t.Fatalf("login 0x%04x", st)
		}
		i.ready(0)
	}
	// a: a write that waits for data, then the connection vanishes.
	p := &PDU{}
	p.BHS.SetOpcode(OpSCSICmd)
	p.BHS.SetFlags(FlagFinal | FlagWrite)
	p.BHS.SetITT(a.nextITT())
	binary.BigEndian.PutUint32(p.BHS[20:], 65536)
	p.BHS.SetCmdSN(a.cmdSN)
	copy(p.BHS[32:], write10(0, 128))
	a.send(p)
	a.c.(*net.TCPConn).SetLinger(0)
	a.c.Close()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; n < 50; n++ {
			data := pattern(4096, byte(n))
			if r := b.command(0, write10(64, 8), data, 0); r.status != 0 {
				t.Errorf("b write: %+v", r)
				return
			}
			if r := b.command(0, read10(64, 8), nil, 4096); !bytes.Equal(r.data, data) {
				t.Errorf("b read back differs")
				return
			}
		}
	}()
	wg.Wait()

	// c: a PDU with a data segment over our MaxRecvDataSegmentLength gets Reject and a closed connection.
	c := dialInitiator(t, env.addr, 3)
	if st := c.login(loginOpts{target: testIQN}); st != 0 {
		t.Fatal(st)
	}
	big := &PDU{Data: make([]byte, 300<<10)}
	big.BHS.SetOpcode(OpNOPOut)
	big.BHS.SetImmediate(true)
	big.BHS.SetITT(c.nextITT())
	go c.send(big)
	if r := c.recv(); r.BHS.Opcode() != OpReject || r.BHS.RejectReason() != RejectProtocolError {
		t.Fatalf("oversized PDU: %s reason %d", opName(r.BHS.Opcode()), r.BHS.RejectReason())
	}
	if r := b.command(0, read10(64, 8), nil, 4096); r.status != 0 {
		t.Fatalf("b after c's error: %+v", r)
	}
	b.logout()
}

// TestEndToEndCmdSNWindow checks that out-of-window commands are ignored and that a command ahead of a
// gap waits for the gap to fill.
func TestEndToEndCmdSNWindow(t *testing.T) {
	env := startServer(t, Config{MaxCmdsPerSession: 8}, TargetConfig{Name: testIQN})
	i := dialInitiator(t, env.addr, 1)
	if st := i.login(loginOpts{target: testIQN}); st != 0 {
		t.Fatal(st)
	}
	i.ready(0)
	tur := func(sn, itt uint32) {
		p := &PDU{}
		p.BHS.SetOpcode(OpSCSICmd)
		p.BHS.SetFlags(FlagFinal)
		p.BHS.SetITT(itt)
		p.BHS.SetCmdSN(sn)
		i.send(p)
	}
	exp := i.cmdSN
	if i.maxCmdSN != exp+7 {
		t.Fatalf("MaxCmdSN %d, ExpCmdSN %d, queue depth 8", i.maxCmdSN, exp)
	}
	tur(exp+8, 100) // beyond MaxCmdSN: ignored
	tur(exp-1, 101) // already seen: ignored
	tur(exp+1, 102) // inside the window, after a gap: held
	tur(exp, 103)   // fills the gap: both run
	seen := map[uint32]bool{}
	for len(seen) < 2 {
		r := i.recv()
		if r.BHS.Opcode() != OpSCSIResp {
			t.Fatalf("unexpected %s", opName(r.BHS.Opcode()))
		}
		seen[r.BHS.ITT()] = true
	}
	if !seen[102] || !seen[103] {
		t.Fatalf("responses for %v", seen)
	}
	i.cmdSN = exp + 2
	if r := i.command(0, []byte{0, 0, 0, 0, 0, 0}, nil, 0); r.status != 0 {
		t.Fatalf("TUR after window test: %+v", r)
	}
	i.logout()
}

// TestEndToEndReinstatement logs in twice with the same ISID and initiator name: the first session is
// closed before the second proceeds.
func TestEndToEndReinstatement(t *testing.T) {
	env := startServer(t, Config{}, TargetConfig{Name: testIQN})
	a := dialInitiator(t, env.addr, 1)
	if st := a.login(loginOpts{target: testIQN}); st != 0 {
		t.Fatal(st)
	}
	b := dialInitiator(t, env.addr, 1)
	if st := b.login(loginOpts{target: testIQN}); st != 0 {
		t.Fatal(st)
	}
	if _, err := ReadPDU(a.c, a.d, 1<<16); err == nil {
		t.Fatal("old session still open")
	}
	b.ready(0)
	b.logout()
}

// TestEndToEndNopInPing checks that an idle connection gets pinged and one that does not answer is
// dropped.
func TestEndToEndNopInPing(t *testing.T) {
	env := startServer(t, Config{NopInInterval: 50 * time.Millisecond, NopInTimeout: 200 * time.Millisecond}, TargetConfig{Name: testIQN})
	i := dialInitiator(t, env.addr, 1)
	if st := i.login(loginOpts{target: testIQN}); st != 0 {
		t.Fatal(st)
	}
	r := i.recv()
	if r.BHS.Opcode() != OpNOPIn || r.BHS.ITT() != ReservedTag || r.BHS.TTT() == ReservedTag {
		t.Fatalf("expected a NOP-In ping, got %s", opName(r.BHS.Opcode()))
	}
	// Answer once: the connection stays.
	p := &PDU{}
	p.BHS.SetOpcode(OpNOPOut)
	p.BHS.SetImmediate(true)
	p.BHS.SetFlags(FlagFinal)
	p.BHS.SetITT(ReservedTag)
	p.BHS.SetTTT(r.BHS.TTT())
	p.BHS.SetCmdSN(i.cmdSN)
	i.send(p)
	// Then stay silent: pings continue and the target hangs up.
	start := time.Now()
	for {
		q, err := ReadPDU(i.c, i.d, 1<<16)
		if err != nil {
			break
		}
		if q.BHS.Opcode() != OpNOPIn {
			t.Fatalf("unexpected %s", opName(q.BHS.Opcode()))
		}
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("dead connection not dropped in time")
	}
}

func TestShutdownSendsAsyncLogout(t *testing.T) {
	srv := NewServer(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	st := scsi.NewTarget(testIQN)
	st.AddLU(0, scsi.LUConfig{Device: block.NewMemory(1<<20, 512)})
	srv.AddTarget(TargetConfig{Name: testIQN, SCSI: st})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	i := dialInitiator(t, l.Addr().String(), 1)
	if st := i.login(loginOpts{target: testIQN}); st != 0 {
		t.Fatal(st)
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	r := i.recv()
	if r.BHS.Opcode() != OpAsyncMsg || r.BHS[36] != 1 {
		t.Fatalf("expected Async Message logout request, got %s", opName(r.BHS.Opcode()))
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatal(err)
	}
}

// TestEndToEndDataSNError sends unsolicited Data-Out with a wrong DataSN: the target rejects that PDU,
// drains the task's remaining data, ends the task with CHECK CONDITION and keeps the session.
func TestEndToEndDataSNError(t *testing.T) {
	env := startServer(t, Config{}, TargetConfig{Name: testIQN})
	i := dialInitiator(t, env.addr, 1)
	if st := i.login(loginOpts{target: testIQN}); st != 0 {
		t.Fatal(st)
	}
	i.ready(0)
	itt := i.nextITT()
	p := &PDU{}
	p.BHS.SetOpcode(OpSCSICmd)
	p.BHS.SetFlags(FlagWrite) // F=0: unsolicited Data-Out follows (InitialR2T=No)
	p.BHS.SetITT(itt)
	binary.BigEndian.PutUint32(p.BHS[20:], 1024)
	p.BHS.SetCmdSN(i.cmdSN)
	i.cmdSN++
	copy(p.BHS[32:], write10(0, 2))
	i.send(p)
	i.dataOut(itt, ReservedTag, 5, 0, make([]byte, 512), false) // DataSN should be 0
	r := i.recv()
	if r.BHS.Opcode() != OpReject || r.BHS.RejectReason() != RejectProtocolError || binary.BigEndian.Uint32(r.Data[16:]) != itt {
		t.Fatalf("expected Reject for ITT %d, got %s reason %d", itt, opName(r.BHS.Opcode()), r.BHS.RejectReason())
	}
	i.dataOut(itt, ReservedTag, 1, 512, make([]byte, 512), true)
	r = i.recv()
	if r.BHS.Opcode() != OpSCSIResp || r.BHS.ITT() != itt || r.BHS.Status() != scsi.StatusCheckCondition || len(r.Data) < 4 || r.Data[2+2]&0xf != 0x0b {
		t.Fatalf("expected CHECK CONDITION/ABORTED COMMAND for ITT %d, got %s status %d", itt, opName(r.BHS.Opcode()), r.BHS.Status())
	}
	if r := i.command(0, read10(0, 1), nil, 512); r.status != 0 {
		t.Fatalf("read after DataSN error: %+v", r)
	}
	i.logout()
}

// TestEndToEndLongSendTargets makes SendTargets answer more than the initiator's MaxRecvDataSegmentLength
// (512): the answer comes in several Text Responses chained by TTT and C bit.
func TestEndToEndLongSendTargets(t *testing.T) {
	var tcs []TargetConfig
	for n := 0; n < 30; n++ {
		tcs = append(tcs, TargetConfig{Name: fmt.Sprintf("iqn.2026-01.test:a-rather-long-target-name-number-%02d", n)})
	}
	env := startServer(t, Config{}, tcs...)
	i := dialInitiator(t, env.addr, 1)
	if st := i.login(loginOpts{ops: []KV{}}); st != 0 {
		t.Fatal(st)
	}
	// Redeclare our receive limit in full feature phase, then ask, split over two requests (C bit).
	req := func(ttt uint32, flags uint8, kvs ...KV) *PDU {
		p := &PDU{Data: AppendText(nil, kvs...)}
		p.BHS.SetOpcode(OpTextReq)
		p.BHS.SetImmediate(true)
		p.BHS.SetFlags(flags)
		p.BHS.SetITT(7)
		p.BHS.SetTTT(ttt)
		p.BHS.SetCmdSN(i.cmdSN)
		return p
	}
	i.send(req(ReservedTag, FlagFinal, KV{"MaxRecvDataSegmentLength", "512"}))
	if r := i.recv(); r.BHS.Opcode() != OpTextResp || answers(mustParse(t, r.Data))["MaxRecvDataSegmentLength"] != "262144" {
		t.Fatalf("MaxRecvDataSegmentLength answer %q", r.Data)
	}
	whole := AppendText(nil, KV{"SendTargets", "All"})
	first := req(ReservedTag, FlagContinue)
	first.Data = whole[:5]
	i.send(first)
	r := i.recv()
	if r.BHS.Opcode() != OpTextResp || r.BHS.Final() || r.BHS.Continue() || len(r.Data) != 0 || r.BHS.TTT() == ReservedTag {
		t.Fatalf("answer to C=1: flags 0x%02x TTT 0x%x data %q", r.BHS.Flags(), r.BHS.TTT(), r.Data)
	}
	second := req(r.BHS.TTT(), FlagFinal)
	second.Data = whole[5:]
	i.send(second)
	var all []byte
	for n := 0; ; n++ {
		r := i.recv()
		if r.BHS.Opcode() != OpTextResp || len(r.Data) > 512 {
			t.Fatalf("%s with %d bytes", opName(r.BHS.Opcode()), len(r.Data))
		}
		all = append(all, r.Data...)
		if r.BHS.Final() {
			if n == 0 {
				t.Fatal("answer was not split")
			}
			break
		}
		if !r.BHS.Continue() || r.BHS.TTT() == ReservedTag {
			t.Fatalf("partial answer flags 0x%02x TTT 0x%x", r.BHS.Flags(), r.BHS.TTT())
		}
		i.send(req(r.BHS.TTT(), FlagFinal))
	}
	kvs := mustParse(t, all)
	if len(kvs) != 60 || kvs[58].Value != tcs[29].Name {
		t.Fatalf("%d keys, last target %v", len(kvs), kvs[len(kvs)-2])
	}
	i.logout()
}
