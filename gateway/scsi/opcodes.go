package scsi

// The command table: one entry per supported operation code (and service action), with the CDB usage map
// that both validates incoming CDBs (a bit set in the CDB but clear in the map is INVALID FIELD IN CDB)
// and answers REPORT SUPPORTED OPERATION CODES (SPC-4 6.35).

// opInfo describes one supported command.
type opInfo struct {
	name  string
	op    byte
	sa    uint16 // service action, when hasSA
	hasSA bool
	// usage is the CDB usage data: byte 0 the operation code, then for every other CDB byte the bits an
	// application client may set. Its length is the CDB length. The CONTROL byte (last) is 0x00: NACA and
	// LINK are not supported and are refused separately.
	usage []byte
	flags opFlags
	pr    prClass // against a persistent reservation held by another nexus
	run   func(*exec) Result
	// Command timeouts descriptor (SPC-4 6.35.4), in seconds: nominal and recommended.
	nominal, recommended uint32
}

type opFlags uint16

const (
	opNoLU   opFlags = 1 << iota // runs when the LUN does not exist (INQUIRY, REPORT LUNS, REQUEST SENSE)
	opNoUA                       // neither reports nor clears unit attentions (same three, SAM-5 5.14)
	opNoTask                     // not registered in the task set: instant, cannot be aborted usefully
	opWrite                      // modifies the medium: refused on read-only LUs with DATA PROTECT
	opMedium                     // accesses the medium: NOT READY while the unit is stopped
	opSPC2OK                     // allowed under another nexus's SPC-2 RESERVE (SPC-2 table 10)
)

// opTable is indexed by operation code; commands with service actions live in saTable.
var (
	opTable [256]*opInfo
	saTable [256][]*opInfo
	opList  []*opInfo // every entry in REPORT SUPPORTED OPERATION CODES order (opcode, then service action)
)

func init() {
	ff := byte(0xff)
	add := func(o *opInfo) {
		o.op = o.usage[0]
		if o.hasSA {
			saTable[o.op] = append(saTable[o.op], o)
		} else {
			opTable[o.op] = o
		}
		opList = append(opList, o)
	}
	const io, slow = 30, 600 // recommended timeouts in seconds: ordinary commands and long ones
	add(&opInfo{name: "TEST UNIT READY", usage: []byte{0x00, 0, 0, 0, 0, 0}, run: cmdTestUnitReady,
		flags: opNoTask, recommended: io})
	add(&opInfo{name: "REQUEST SENSE", usage: []byte{0x03, 0, 0, 0, ff, 0}, run: cmdRequestSense,
		flags: opNoLU | opNoUA | opNoTask, recommended: io})
	add(&opInfo{name: "READ(6)", usage: []byte{0x08, 0x1f, ff, ff, ff, 0}, run: cmdRead,
		flags: opMedium, recommended: io})
	add(&opInfo{name: "WRITE(6)", usage: []byte{0x0a, 0x1f, ff, ff, ff, 0}, run: cmdWrite,
		flags: opMedium | opWrite, recommended: io})
	add(&opInfo{name: "INQUIRY", usage: []byte{0x12, 0x01, ff, ff, ff, 0}, run: cmdInquiry,
		flags: opNoLU | opNoUA | opNoTask, recommended: io})
	add(&opInfo{name: "MODE SELECT(6)", usage: []byte{0x15, 0x11, 0, 0, ff, 0}, run: cmdModeSelect,
		flags: opNoTask, recommended: io})
	add(&opInfo{name: "MODE SENSE(6)", usage: []byte{0x1a, 0x08, ff, ff, ff, 0}, run: cmdModeSense,
		flags: opNoTask, recommended: io})
	add(&opInfo{name: "START STOP UNIT", usage: []byte{0x1b, 0x01, 0, 0x0f, 0xf7, 0}, run: cmdStartStopUnit,
		recommended: io})
	add(&opInfo{name: "PREVENT ALLOW MEDIUM REMOVAL", usage: []byte{0x1e, 0, 0, 0, 0x03, 0},
		run: cmdPreventAllow, flags: opNoTask, recommended: io})
	add(&opInfo{name: "RESERVE(6)", usage: []byte{0x16, 0, 0, 0, 0, 0}, run: cmdReserve, flags: opNoTask,
		pr: prWrite, recommended: io})
	add(&opInfo{name: "RELEASE(6)", usage: []byte{0x17, 0, 0, 0, 0, 0}, run: cmdRelease, flags: opNoTask | opSPC2OK,
		pr: prWrite, recommended: io})
	add(&opInfo{name: "READ CAPACITY(10)", usage: []byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		run: cmdReadCapacity10, flags: opNoTask, recommended: io})
	add(&opInfo{name: "READ(10)", usage: []byte{0x28, 0x1a, ff, ff, ff, ff, 0x1f, ff, ff, 0}, run: cmdRead,
		flags: opMedium, recommended: io})
	add(&opInfo{name: "WRITE(10)", usage: []byte{0x2a, 0x1a, ff, ff, ff, ff, 0x1f, ff, ff, 0}, run: cmdWrite,
		flags: opMedium | opWrite, recommended: io})
	add(&opInfo{name: "WRITE AND VERIFY(10)", usage: []byte{0x2e, 0x12, ff, ff, ff, ff, 0x1f, ff, ff, 0},
		run: cmdWrite, flags: opMedium | opWrite, recommended: io})
	add(&opInfo{name: "VERIFY(10)", usage: []byte{0x2f, 0x16, ff, ff, ff, ff, 0x1f, ff, ff, 0}, run: cmdVerify,
		flags: opMedium, recommended: io})
	add(&opInfo{name: "READ DEFECT DATA(10)", usage: []byte{0x37, 0, 0x1f, 0, 0, 0, 0, ff, ff, 0},
		run: cmdReadDefectData, flags: opNoTask, recommended: io})
	add(&opInfo{name: "PRE-FETCH(10)", usage: []byte{0x34, 0x02, ff, ff, ff, ff, 0x1f, ff, ff, 0},
		run: cmdPrefetch, flags: opMedium, recommended: io})
	add(&opInfo{name: "SYNCHRONIZE CACHE(10)", usage: []byte{0x35, 0x06, ff, ff, ff, ff, 0x1f, ff, ff, 0},
		run: cmdSyncCache, flags: opMedium, recommended: slow})
	add(&opInfo{name: "WRITE SAME(10)", usage: []byte{0x41, 0x08, ff, ff, ff, ff, 0x1f, ff, ff, 0},
		run: cmdWriteSame, flags: opMedium | opWrite, recommended: slow})
	add(&opInfo{name: "UNMAP", usage: []byte{0x42, 0, 0, 0, 0, 0, 0x1f, ff, ff, 0}, run: cmdUnmap,
		flags: opMedium | opWrite, recommended: slow})
	add(&opInfo{name: "SANITIZE", usage: []byte{0x48, 0xbf, 0, 0, 0, 0, 0, ff, ff, 0}, hasSA: true, sa: 0x01,
		run: cmdSanitize, flags: opMedium | opWrite, recommended: slow})
	add(&opInfo{name: "SANITIZE", usage: []byte{0x48, 0xbf, 0, 0, 0, 0, 0, ff, ff, 0}, hasSA: true, sa: 0x02,
		run: cmdSanitize, flags: opMedium | opWrite, recommended: slow})
	add(&opInfo{name: "SANITIZE", usage: []byte{0x48, 0xbf, 0, 0, 0, 0, 0, ff, ff, 0}, hasSA: true, sa: 0x1f,
		run: cmdSanitize, flags: opMedium | opWrite, recommended: slow})
	add(&opInfo{name: "MODE SELECT(10)", usage: []byte{0x55, 0x11, 0, 0, 0, 0, 0, ff, ff, 0},
		run: cmdModeSelect, flags: opNoTask, recommended: io})
	add(&opInfo{name: "RESERVE(10)", usage: []byte{0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0}, run: cmdReserve,
		flags: opNoTask, pr: prWrite, recommended: io})
	add(&opInfo{name: "RELEASE(10)", usage: []byte{0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0}, run: cmdRelease,
		flags: opNoTask | opSPC2OK, pr: prWrite, recommended: io})
	add(&opInfo{name: "MODE SENSE(10)", usage: []byte{0x5a, 0x18, ff, ff, 0, 0, 0, ff, ff, 0},
		run: cmdModeSense, flags: opNoTask, recommended: io})
	for sa := uint16(0); sa <= prinReadFullStatus; sa++ {
		add(&opInfo{name: "PERSISTENT RESERVE IN", usage: []byte{0x5e, 0x1f, 0, 0, 0, 0, 0, ff, ff, 0}, hasSA: true,
			sa: sa, run: cmdPRIn, flags: opNoTask | opSPC2OK, recommended: io})
	}
	for _, sa := range []uint16{proutRegister, proutReserve, proutRelease, proutClear, proutPreempt,
		proutPreemptAbort, proutRegisterIgnore} {
		add(&opInfo{name: "PERSISTENT RESERVE OUT", usage: []byte{0x5f, 0x1f, ff, 0, 0, ff, ff, ff, ff, 0},
			hasSA: true, sa: sa, run: cmdPROut, recommended: io})
	}
	add(&opInfo{name: "EXTENDED COPY", usage: []byte{0x83, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, ff, ff, ff, ff, 0, 0},
		hasSA: true, sa: 0x00, run: cmdExtendedCopy, flags: opMedium, recommended: slow})
	for _, sa := range []uint16{rcrCopyStatus, rcrOpParams} {
		add(&opInfo{name: "RECEIVE COPY RESULTS", usage: []byte{0x84, 0x1f, ff, 0, 0, 0, 0, 0, 0, 0, ff, ff, ff, ff, 0, 0},
			hasSA: true, sa: sa, run: cmdReceiveCopyResults, flags: opNoTask, recommended: io})
	}
	add(&opInfo{name: "READ(16)", usage: []byte{0x88, 0x1a, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdRead, flags: opMedium, recommended: io})
	add(&opInfo{name: "COMPARE AND WRITE", usage: []byte{0x89, 0x1a, ff, ff, ff, ff, ff, ff, ff, ff, 0, 0, 0, ff, 0x1f, 0},
		run: cmdCompareAndWrite, flags: opMedium | opWrite, recommended: io})
	add(&opInfo{name: "WRITE(16)", usage: []byte{0x8a, 0x1a, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdWrite, flags: opMedium | opWrite, recommended: io})
	add(&opInfo{name: "ORWRITE(16)", usage: []byte{0x8b, 0x1a, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdOrWrite, flags: opMedium | opWrite, recommended: io})
	add(&opInfo{name: "WRITE AND VERIFY(16)", usage: []byte{0x8e, 0x12, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdWrite, flags: opMedium | opWrite, recommended: io})
	add(&opInfo{name: "VERIFY(16)", usage: []byte{0x8f, 0x16, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdVerify, flags: opMedium, recommended: io})
	add(&opInfo{name: "PRE-FETCH(16)", usage: []byte{0x90, 0x02, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdPrefetch, flags: opMedium, recommended: io})
	add(&opInfo{name: "SYNCHRONIZE CACHE(16)", usage: []byte{0x91, 0x06, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdSyncCache, flags: opMedium, recommended: slow})
	add(&opInfo{name: "WRITE SAME(16)", usage: []byte{0x93, 0x09, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdWriteSame, flags: opMedium | opWrite, recommended: slow})
	add(&opInfo{name: "READ CAPACITY(16)", usage: []byte{0x9e, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, ff, ff, ff, ff, 0, 0},
		hasSA: true, sa: 0x10, run: cmdReadCapacity16, flags: opNoTask, recommended: io})
	add(&opInfo{name: "GET LBA STATUS", usage: []byte{0x9e, 0x1f, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0, 0},
		hasSA: true, sa: 0x12, run: cmdGetLBAStatus, flags: opMedium, recommended: io})
	add(&opInfo{name: "REPORT LUNS", usage: []byte{0xa0, 0, ff, 0, 0, 0, ff, ff, ff, ff, 0, 0}, run: cmdReportLUNs,
		flags: opNoLU | opNoUA | opNoTask, recommended: io})
	add(&opInfo{name: "REPORT SUPPORTED OPERATION CODES", usage: []byte{0xa3, 0x1f, 0x87, ff, ff, ff, ff, ff, ff, ff, 0, 0},
		hasSA: true, sa: 0x0c, run: cmdReportOpcodes, flags: opNoTask, recommended: io})
	add(&opInfo{name: "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", usage: []byte{0xa3, 0x1f, 0x80, 0, 0, 0, ff, ff, ff, ff, 0, 0},
		hasSA: true, sa: 0x0d, run: cmdReportTMFs, flags: opNoTask, recommended: io})
	add(&opInfo{name: "REPORT TARGET PORT GROUPS", usage: []byte{0xa3, 0xff, 0, 0, 0, 0, ff, ff, ff, ff, 0, 0},
		hasSA: true, sa: 0x0a, run: cmdReportTargetPortGroups, flags: opNoTask, recommended: io})
	add(&opInfo{name: "READ(12)", usage: []byte{0xa8, 0x1a, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdRead, flags: opMedium, recommended: io})
	add(&opInfo{name: "WRITE(12)", usage: []byte{0xaa, 0x1a, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdWrite, flags: opMedium | opWrite, recommended: io})
	add(&opInfo{name: "WRITE AND VERIFY(12)", usage: []byte{0xae, 0x12, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdWrite, flags: opMedium | opWrite, recommended: io})
	add(&opInfo{name: "VERIFY(12)", usage: []byte{0xaf, 0x16, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0},
		run: cmdVerify, flags: opMedium, recommended: io})
	add(&opInfo{name: "READ DEFECT DATA(12)", usage: []byte{0xb7, 0x1f, 0, 0, 0, 0, ff, ff, ff, ff, 0, 0},
		run: cmdReadDefectData, flags: opNoTask, recommended: io})
}

// Reservation classes (SPC-4 5.9.1 table 47, SBC-3 4.17 table 13) and the commands SPC-2 reservations let
// through, set by name so that the table above stays readable.
func init() {
	allowed := map[string]bool{"TEST UNIT READY": true, "INQUIRY": true, "REQUEST SENSE": true, "REPORT LUNS": true,
		"READ CAPACITY(10)": true, "READ CAPACITY(16)": true, "REPORT SUPPORTED OPERATION CODES": true,
		"REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS": true, "PERSISTENT RESERVE IN": true,
		"PERSISTENT RESERVE OUT": true, "REPORT TARGET PORT GROUPS": true}
	read := map[byte]bool{0x08: true, 0x28: true, 0xa8: true, 0x88: true, 0x2f: true, 0xaf: true, 0x8f: true,
		0x34: true, 0x90: true, 0x1a: true, 0x5a: true, 0x84: true}
	spc2 := map[string]bool{"INQUIRY": true, "REQUEST SENSE": true, "REPORT LUNS": true, "RELEASE(6)": true,
		"RELEASE(10)": true, "PERSISTENT RESERVE IN": true, "REPORT SUPPORTED OPERATION CODES": true,
		"REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS": true, "REPORT TARGET PORT GROUPS": true}
	for _, o := range opList {
		switch {
		case allowed[o.name]:
			o.pr = prAllowed
		case read[o.op] || o.name == "GET LBA STATUS":
			o.pr = prRead
		default:
			o.pr = prWrite
		}
		if spc2[o.name] {
			o.flags |= opSPC2OK
		}
	}
}

// lookupOp finds the table entry for cdb, or returns the sense for an unsupported operation code (INVALID
// COMMAND OPERATION CODE) or service action (INVALID FIELD IN CDB at byte 1, bit 4: SPC-4 4.5.2).
func lookupOp(cdb []byte) (*opInfo, *senseError) {
	op := cdb[0]
	if o := opTable[op]; o != nil {
		return o, nil
	}
	if list := saTable[op]; list != nil {
		sa, ok := ServiceAction(cdb)
		if !ok {
			return nil, invalidCDB(1, 4)
		}
		for _, o := range list {
			if o.sa == sa {
				return o, nil
			}
		}
		return nil, invalidCDB(1, 4)
	}
	return nil, invalidOpcode(0, -1)
}
