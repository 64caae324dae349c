package cli

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"opensan/gateway/iscsi"
	"opensan/gateway/scsi"
)

// initiator is the least iSCSI initiator that tests of serve need: one session with one connection, no
// authentication, synchronous commands whose data fits one PDU.
type initiator struct {
	t                     *testing.T
	c                     net.Conn
	itt, cmdSN, expStatSN uint32
}

// dialLogin connects to addr and logs in to target (normal session, AuthMethod None).
func dialLogin(t *testing.T, addr, target string) *initiator {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	i := &initiator{t: t, c: c, cmdSN: 1}
	i.loginStep(0, 1, iscsi.KV{Key: "InitiatorName", Value: "iqn.2026-11.org.opensan:cli-test"},
		iscsi.KV{Key: "SessionType", Value: "Normal"}, iscsi.KV{Key: "TargetName", Value: target},
		iscsi.KV{Key: "AuthMethod", Value: "None"})
	ans := i.loginStep(1, 3, iscsi.KV{Key: "MaxRecvDataSegmentLength", Value: "65536"},
		iscsi.KV{Key: "ImmediateData", Value: "Yes"}, iscsi.KV{Key: "FirstBurstLength", Value: "65536"})
	if ans["ImmediateData"] != "Yes" {
		t.Fatalf("target refused ImmediateData: %v", ans)
	}
	return i
}

func (i *initiator) loginStep(csg, nsg uint8, kvs ...iscsi.KV) map[string]string {
	i.t.Helper()
	p := &iscsi.PDU{Data: iscsi.AppendText(nil, kvs...)}
	p.BHS.SetOpcode(iscsi.OpLoginReq)
	p.BHS.SetImmediate(true)
	p.BHS.SetLoginStages(true, false, csg, nsg)
	p.BHS.SetISID([6]byte{0x80, 0, 0, 0, 0, 1})
	p.BHS.SetITT(i.itt)
	p.BHS.SetCmdSN(i.cmdSN)
	p.BHS.SetExpStatSN(i.expStatSN)
	if err := iscsi.WritePDU(i.c, p, iscsi.Digests{}); err != nil {
		i.t.Fatal(err)
	}
	r, err := iscsi.ReadPDU(i.c, iscsi.Digests{}, 1<<16)
	if err != nil {
		i.t.Fatal(err)
	}
	if r.BHS.Opcode() != iscsi.OpLoginResp || r.BHS.StatusClass() != 0 || !r.BHS.Transit() || r.BHS.NSG() != nsg {
		i.t.Fatalf("login stage %d->%d: opcode %#x status %d/%d flags %#x", csg, nsg, r.BHS.Opcode(),
			r.BHS.StatusClass(), r.BHS.StatusDetail(), r.BHS.Flags())
	}
	i.expStatSN = r.BHS.StatSN() + 1
	kvs, err = iscsi.ParseText(r.Data)
	if err != nil {
		i.t.Fatal(err)
	}
	ans := map[string]string{}
	for _, kv := range kvs {
		ans[kv.Key] = kv.Value
	}
	return ans
}

// command runs cdb on lun with out as immediate data (nil for none) and up to readLen bytes of Data-In;
// it returns the SCSI status and the data read.
func (i *initiator) command(lun uint64, cdb, out []byte, readLen uint32) (byte, []byte) {
	i.t.Helper()
	i.itt++
	p := &iscsi.PDU{Data: out}
	h := &p.BHS
	h.SetOpcode(iscsi.OpSCSICmd)
	flags := uint8(iscsi.FlagFinal | byte(scsi.Simple))
	edtl := readLen
	if out != nil {
		flags |= iscsi.FlagWrite
		edtl = uint32(len(out))
	}
	if readLen > 0 {
		flags |= iscsi.FlagRead
	}
	h.SetFlags(flags)
	h.SetLUNField(lun << 48) // single-level LUN addressing, LUN < 256
	h.SetITT(i.itt)
	binary.BigEndian.PutUint32(h[20:], edtl)
	h.SetCmdSN(i.cmdSN)
	h.SetExpStatSN(i.expStatSN)
	i.cmdSN++
	copy(h.CDB(), cdb)
	if err := iscsi.WritePDU(i.c, p, iscsi.Digests{}); err != nil {
		i.t.Fatal(err)
	}
	var data []byte
	for {
		r, err := iscsi.ReadPDU(i.c, iscsi.Digests{}, 1<<20)
		if err != nil {
			i.t.Fatal(err)
		}
		switch r.BHS.Opcode() {
		case iscsi.OpDataIn:
			data = append(data, r.Data...)
			if r.BHS.Flags()&iscsi.FlagStatus != 0 {
				i.expStatSN = r.BHS.StatSN() + 1
				return r.BHS.Status(), data
			}
		case iscsi.OpSCSIResp:
			i.expStatSN = r.BHS.StatSN() + 1
			return r.BHS.Status(), data
		case iscsi.OpNOPIn, iscsi.OpAsyncMsg:
		default:
			i.t.Fatalf("unexpected opcode %#x", r.BHS.Opcode())
		}
	}
}

// ready clears the power-on unit attention every new nexus starts with.
func (i *initiator) ready(lun uint64) {
	i.t.Helper()
	for range 4 {
		if st, _ := i.command(lun, make([]byte, 6), nil, 0); st == scsi.StatusGood {
			return
		}
	}
	i.t.Fatalf("LUN %d: TEST UNIT READY never succeeded", lun)
}

// capacity is the LUN's size in bytes by READ CAPACITY (16).
func (i *initiator) capacity(lun uint64) int64 {
	i.t.Helper()
	cdb := make([]byte, 16)
	cdb[0], cdb[1] = 0x9e, 0x10
	binary.BigEndian.PutUint32(cdb[10:], 32)
	st, d := i.command(lun, cdb, nil, 32)
	if st != scsi.StatusGood || len(d) < 12 {
		i.t.Fatalf("LUN %d: READ CAPACITY (16): status %#x, %d bytes", lun, st, len(d))
	}
	return int64(binary.BigEndian.Uint64(d)+1) * int64(binary.BigEndian.Uint32(d[8:]))
}

// write10 writes data (whole 512-byte blocks) at lba.
func (i *initiator) write10(lun uint64, lba uint32, data []byte) {
	i.t.Helper()
	cdb := make([]byte, 10)
	cdb[0] = 0x2a
	binary.BigEndian.PutUint32(cdb[2:], lba)
	binary.BigEndian.PutUint16(cdb[7:], uint16(len(data)/512))
	if st, _ := i.command(lun, cdb, data, 0); st != scsi.StatusGood {
		i.t.Fatalf("LUN %d: WRITE (10): status %#x", lun, st)
	}
}
