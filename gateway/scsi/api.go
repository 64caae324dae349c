// Package scsi executes SCSI commands (SPC-4, SBC-3) for disk logical units backed by a block.Device.
//
// It knows nothing of iSCSI: a transport (package iscsi, later others) turns wire PDUs into a Command,
// gathers all Data-Out bytes first, calls Target.Execute, and sends the Result back as Data-In and a
// status. Task management (aborts, resets) goes through the Target too, because a LUN RESET from one
// session must stop the commands of every session.
package scsi

// Nexus names an I_T nexus: one initiator port talking to one target port. Unit attentions and, later,
// reservations are kept per nexus.
type Nexus struct {
	// InitiatorPort is the SCSI initiator port name, for iSCSI "iqn.…,i,0x<ISID in hex>".
	InitiatorPort string
	// InitiatorName is the initiator's name alone (for iSCSI the InitiatorName key), used for ACLs.
	InitiatorName string
	// RelativeTargetPort is the relative target port identifier (1-based), reported in VPD 0x83.
	RelativeTargetPort uint16
}

// TaskAttribute is the SAM task attribute of a command.
type TaskAttribute uint8

const (
	Simple TaskAttribute = iota
	Ordered
	HeadOfQueue
	ACA
)

// Command is one SCSI command as a transport hands it over.
type Command struct {
	Nexus *Nexus
	LUN   uint64 // flat LUN number (the transport decodes the 8-byte LUN field)
	Tag   uint64 // task tag, unique per nexus while the task lives (iSCSI: the ITT)
	Attr  TaskAttribute
	CDB   []byte // 6 to 260 bytes; the transport strips trailing padding only when it knows the length

	// DataOut holds the bytes the initiator sent (immediate, unsolicited and solicited data, in order). Its
	// length is what the initiator declared (iSCSI: Expected Data Transfer Length for writes). The Target
	// does not keep it after Execute returns.
	DataOut []byte
	// DataInLength is the most data the initiator accepts back (iSCSI: Expected Data Transfer Length for
	// reads; for bidirectional commands the Bidirectional Read Expected Data Transfer Length).
	DataInLength uint32
}

// SCSI status codes (SAM-5).
const (
	StatusGood                = 0x00
	StatusCheckCondition      = 0x02
	StatusConditionMet        = 0x04
	StatusBusy                = 0x08
	StatusReservationConflict = 0x18
	StatusTaskSetFull         = 0x28
	StatusACAActive           = 0x30
	StatusTaskAborted         = 0x40
)

// Result is the outcome of Execute.
type Result struct {
	Status byte
	// Sense is fixed-format sense data (response code 0x70), nil unless Status is CHECK CONDITION.
	Sense []byte
	// DataIn is the data for the initiator. It may be longer than Command.DataInLength: the transport sends
	// DataInLength bytes and reports the rest as an overflow residual; shorter is an underflow.
	DataIn []byte
	// DataOutWanted is how many Data-Out bytes the CDB asked for (its transfer length in bytes; 0 for
	// commands without data out). The transport compares it with len(Command.DataOut) for the residual.
	DataOutWanted int

	// Aborted is set when the task was aborted; the transport sends no response for it.
	Aborted bool

	release func()  // generic release hook
	pooled  *pooled // a pooled data-in buffer, returned by Release without a closure
}

// Release returns DataIn's buffer to its pool. The transport calls it once the data is on the wire; DataIn
// must not be used afterwards. Safe on a zero Result.
func (r *Result) Release() {
	if r.release != nil {
		r.release()
		r.release = nil
	}
	if r.pooled != nil {
		r.pooled.put()
		r.pooled = nil
	}
	r.DataIn = nil
}

// TMFResponse is the answer to a task management function (SAM-5 service responses, iSCSI codes).
type TMFResponse uint8

const (
	TMFComplete             TMFResponse = 0 // function complete
	TMFNoSuchTask           TMFResponse = 1 // task does not exist
	TMFNoSuchLUN            TMFResponse = 2 // LUN does not exist
	TMFTaskStillAllegiant   TMFResponse = 3
	TMFReassignNotSupported TMFResponse = 4
	TMFNotSupported         TMFResponse = 5
	TMFAuthFailed           TMFResponse = 6
	TMFRejected             TMFResponse = 255
)
