package scsi

import "testing"

// TestReservedBitsRejected sets, one at a time, every CDB bit the usage map of every supported command
// does not allow, and expects INVALID FIELD IN CDB pointing at exactly that byte and bit.
func TestReservedBitsRejected(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	checked := 0
	for _, o := range opList {
		for i := 1; i < len(o.usage)-1; i++ {
			for bit := 0; bit < 8; bit++ {
				if o.usage[i]&(1<<bit) != 0 {
					continue
				}
				cdb := make([]byte, len(o.usage))
				cdb[0] = o.op
				if o.hasSA {
					cdb[1] = byte(o.sa)
				}
				cdb[i] |= 1 << bit
				if i == 1 && o.hasSA && bit < 5 {
					continue // part of the service action field
				}
				r := run(tg, cdb, nil)
				v, cd, f, b := SenseFieldPointer(r.Sense)
				if r.Status != StatusCheckCondition || SenseASC(r.Sense) != ASCInvalidFieldInCDB || !v || !cd || f != i || b != bit {
					t.Fatalf("%s: bit %d of byte %d: status %#x ASC %#04x pointer %v/%v/%d/%d", o.name, bit, i,
						r.Status, SenseASC(r.Sense), v, cd, f, b)
				}
				checked++
			}
		}
		// NACA in the control byte.
		cdb := make([]byte, len(o.usage))
		cdb[0] = o.op
		if o.hasSA {
			cdb[1] = byte(o.sa)
		}
		cdb[len(cdb)-1] = controlNACA
		expectField(t, run(tg, cdb, nil), true, len(cdb)-1, 2)
	}
	if checked < 500 {
		t.Fatalf("only %d reserved bits checked", checked)
	}
}

// TestProtectionFieldsRejected: without protection information, RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT
// other than 0 are INVALID FIELD IN CDB at byte 1 (SBC-3 5.x), reported at their lowest set bit.
func TestProtectionFieldsRejected(t *testing.T) {
	tg, _ := newTestTarget(t, 1024)
	for _, op := range []byte{0x28, 0xa8, 0x88, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e, 0x2f, 0xaf, 0x8f, 0x89, 0x8b, 0x41, 0x93} {
		for p := byte(1); p < 8; p++ {
			cdb := make([]byte, CDBLength(op))
			cdb[0], cdb[1] = op, p<<5
			r := run(tg, cdb, fill(1024, 0))
			expectSense(t, r, SenseIllegalRequest, ASCInvalidFieldInCDB)
			if v, _, f, _ := SenseFieldPointer(r.Sense); !v || f != 1 {
				t.Fatalf("opcode %#x PROTECT %d: pointer byte %d", op, p, f)
			}
		}
	}
}

func TestTableConsistency(t *testing.T) {
	seen := map[[2]uint16]bool{}
	for _, o := range opList {
		if o.usage[0] != o.op || len(o.usage) != CDBLength(o.op) {
			t.Fatalf("%s: usage length %d, CDB length %d", o.name, len(o.usage), CDBLength(o.op))
		}
		k := [2]uint16{uint16(o.op), o.sa}
		if seen[k] {
			t.Fatalf("%s listed twice", o.name)
		}
		seen[k] = true
		if o.hasSA && o.usage[1]&0x1f != 0x1f {
			t.Fatalf("%s: service action bits not in the usage map", o.name)
		}
	}
}
