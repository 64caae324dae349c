// Package iscsi is the target side of the iSCSI transport (RFC 7143): PDU codec, login and parameter
// negotiation with CHAP, discovery (SendTargets) and the full feature phase that turns SCSI Command and
// Data-Out PDUs into scsi.Commands and scsi.Results into Data-In and SCSI Response PDUs.
package iscsi

import (
	"encoding/binary"
	"fmt"
)

// BHSLen is the size of the Basic Header Segment in bytes (RFC 7143 11.2.1).
const BHSLen = 48

// Opcodes (RFC 7143 11.2.1.2). Initiator opcodes are 0x00-0x1f, target opcodes 0x20-0x3f.
const (
	OpNOPOut       = 0x00
	OpSCSICmd      = 0x01
	OpTaskMgmtReq  = 0x02
	OpLoginReq     = 0x03
	OpTextReq      = 0x04
	OpDataOut      = 0x05
	OpLogoutReq    = 0x06
	OpSNACKReq     = 0x10
	OpNOPIn        = 0x20
	OpSCSIResp     = 0x21
	OpTaskMgmtResp = 0x22
	OpLoginResp    = 0x23
	OpTextResp     = 0x24
	OpDataIn       = 0x25
	OpLogoutResp   = 0x26
	OpR2T          = 0x31
	OpAsyncMsg     = 0x32
	OpReject       = 0x3f
)

// Flag bits of byte 1 (RFC 7143 11.3 ff.). Their meaning depends on the opcode.
const (
	FlagFinal     = 0x80 // F: last PDU of a sequence / the command PDU is complete
	FlagRead      = 0x40 // SCSI Command R
	FlagWrite     = 0x20 // SCSI Command W
	FlagContinue  = 0x40 // Login/Text C
	FlagTransit   = 0x80 // Login T
	FlagAck       = 0x40 // Data-In A
	FlagBiOver    = 0x10 // SCSI Response o: bidirectional read residual overflow
	FlagBiUnder   = 0x08 // SCSI Response u: bidirectional read residual underflow
	FlagOverflow  = 0x04 // O: residual overflow
	FlagUnderflow = 0x02 // U: residual underflow
	FlagStatus    = 0x01 // Data-In S: status in this PDU
	attrMask      = 0x07 // SCSI Command ATTR
	immediateBit  = 0x40 // byte 0 I
	opcodeMask    = 0x3f
)

// ReservedTag is the all-ones value of ITT and TTT meaning "none".
const ReservedTag = 0xffffffff

// BHS is the 48-byte Basic Header Segment. The accessors read and write fields at the offsets RFC 7143
// section 11 gives them; which accessor is meaningful depends on the opcode.
type BHS [BHSLen]byte

func (h *BHS) u32(off int) uint32      { return binary.BigEndian.Uint32(h[off:]) }
func (h *BHS) put32(off int, v uint32) { binary.BigEndian.PutUint32(h[off:], v) }
func (h *BHS) u16(off int) uint16      { return binary.BigEndian.Uint16(h[off:]) }
func (h *BHS) put16(off int, v uint16) { binary.BigEndian.PutUint16(h[off:], v) }
func (h *BHS) Opcode() uint8           { return h[0] & opcodeMask }
func (h *BHS) Immediate() bool         { return h[0]&immediateBit != 0 }
func (h *BHS) Flags() uint8            { return h[1] }
func (h *BHS) Final() bool             { return h[1]&FlagFinal != 0 }
func (h *BHS) TotalAHSLength() int     { return int(h[4]) * 4 } // byte 4, in 4-byte words
func (h *BHS) DataSegmentLength() int  { return int(h[5])<<16 | int(h[6])<<8 | int(h[7]) }
func (h *BHS) LUNField() uint64        { return binary.BigEndian.Uint64(h[8:]) } // bytes 8-15
func (h *BHS) ITT() uint32             { return h.u32(16) }                      // bytes 16-19
func (h *BHS) SetOpcode(op uint8)      { h[0] = h[0]&^opcodeMask | op&opcodeMask }
func (h *BHS) SetFlags(f uint8)        { h[1] = f }
func (h *BHS) SetLUNField(l uint64)    { binary.BigEndian.PutUint64(h[8:], l) }
func (h *BHS) SetITT(v uint32)         { h.put32(16, v) }
func (h *BHS) SetTotalAHSLength(n int) { h[4] = byte(n / 4) }
func (h *BHS) SetImmediate(on bool) {
	if on {
		h[0] |= immediateBit
	} else {
		h[0] &^= immediateBit
	}
}

// SetDataSegmentLength stores n (bytes, without padding) in bytes 5-7.
func (h *BHS) SetDataSegmentLength(n int) { h[5], h[6], h[7] = byte(n>>16), byte(n>>8), byte(n) }

// Fields at bytes 20-47, named as in the RFC. Offsets are shared between PDU types.
func (h *BHS) TTT() uint32                   { return h.u32(20) } // Data-Out, NOP, Text, R2T, Data-In
func (h *BHS) SetTTT(v uint32)               { h.put32(20, v) }
func (h *BHS) ExpectedDataLength() uint32    { return h.u32(20) } // SCSI Command
func (h *BHS) ReferencedTaskTag() uint32     { return h.u32(20) } // Task Management request
func (h *BHS) CmdSN() uint32                 { return h.u32(24) } // requests
func (h *BHS) SetCmdSN(v uint32)             { h.put32(24, v) }
func (h *BHS) StatSN() uint32                { return h.u32(24) } // responses
func (h *BHS) SetStatSN(v uint32)            { h.put32(24, v) }
func (h *BHS) ExpStatSN() uint32             { return h.u32(28) } // requests
func (h *BHS) SetExpStatSN(v uint32)         { h.put32(28, v) }
func (h *BHS) ExpCmdSN() uint32              { return h.u32(28) } // responses
func (h *BHS) SetExpCmdSN(v uint32)          { h.put32(28, v) }
func (h *BHS) MaxCmdSN() uint32              { return h.u32(32) } // responses
func (h *BHS) SetMaxCmdSN(v uint32)          { h.put32(32, v) }
func (h *BHS) RefCmdSN() uint32              { return h.u32(32) } // Task Management request
func (h *BHS) DataSN() uint32                { return h.u32(36) } // Data-In/Out; R2TSN and ExpDataSN share it
func (h *BHS) SetDataSN(v uint32)            { h.put32(36, v) }
func (h *BHS) BufferOffset() uint32          { return h.u32(40) } // Data-In/Out, R2T
func (h *BHS) SetBufferOffset(v uint32)      { h.put32(40, v) }
func (h *BHS) BidiResidualCount() uint32     { return h.u32(40) } // SCSI Response
func (h *BHS) SetBidiResidualCount(v uint32) { h.put32(40, v) }
func (h *BHS) ResidualCount() uint32         { return h.u32(44) } // SCSI Response, Data-In
func (h *BHS) SetResidualCount(v uint32)     { h.put32(44, v) }
func (h *BHS) DesiredDataLength() uint32     { return h.u32(44) } // R2T
func (h *BHS) SetDesiredDataLength(v uint32) { h.put32(44, v) }

// CDB returns the 16 CDB bytes of a SCSI Command (bytes 32-47).
func (h *BHS) CDB() []byte { return h[32:48] }

// SCSI Command and Response specifics.
func (h *BHS) TaskAttr() uint8         { return h[1] & attrMask }
func (h *BHS) SetResponse(v uint8)     { h[2] = v } // SCSI/TMF/Logout response byte
func (h *BHS) Response() uint8         { return h[2] }
func (h *BHS) SetStatus(v uint8)       { h[3] = v } // SCSI status (SCSI Response, Data-In)
func (h *BHS) Status() uint8           { return h[3] }
func (h *BHS) TMFunction() uint8       { return h[1] & 0x7f }
func (h *BHS) LogoutReason() uint8     { return h[1] & 0x7f }
func (h *BHS) RejectReason() uint8     { return h[2] }
func (h *BHS) SetRejectReason(v uint8) { h[2] = v }

// Login specifics (RFC 7143 11.12, 11.13).
func (h *BHS) Transit() bool                { return h[1]&FlagTransit != 0 }
func (h *BHS) Continue() bool               { return h[1]&FlagContinue != 0 }
func (h *BHS) CSG() uint8                   { return h[1] >> 2 & 3 }
func (h *BHS) NSG() uint8                   { return h[1] & 3 }
func (h *BHS) VersionMax() uint8            { return h[2] }
func (h *BHS) VersionMin() uint8            { return h[3] } // request; in a response byte 3 is VersionActive
func (h *BHS) ISID() [6]byte                { return [6]byte(h[8:14]) }
func (h *BHS) SetISID(v [6]byte)            { copy(h[8:14], v[:]) }
func (h *BHS) TSIH() uint16                 { return h.u16(14) }
func (h *BHS) SetTSIH(v uint16)             { h.put16(14, v) }
func (h *BHS) CID() uint16                  { return h.u16(20) } // Login and Logout request
func (h *BHS) StatusClass() uint8           { return h[36] }
func (h *BHS) StatusDetail() uint8          { return h[37] }
func (h *BHS) SetLoginStatus(s LoginStatus) { h[36], h[37] = byte(s>>8), byte(s) }
func (h *BHS) SetLoginStages(transit, cont bool, csg, nsg uint8) {
	var f uint8
	if transit {
		f |= FlagTransit
	}
	if cont {
		f |= FlagContinue
	}
	h[1] = f | (csg&3)<<2 | nsg&3
}

// Logout response times in seconds (bytes 40-43).
func (h *BHS) SetTime2Wait(v uint16)   { h.put16(40, v) }
func (h *BHS) SetTime2Retain(v uint16) { h.put16(42, v) }

// Async Message fields (RFC 7143 11.9): event, vendor code and three 16-bit parameters.
func (h *BHS) SetAsyncEvent(event, vcode uint8, p1, p2, p3 uint16) {
	h[36], h[37] = event, vcode
	h.put16(38, p1)
	h.put16(40, p2)
	h.put16(42, p3)
}

// LoginStatus is Status-Class (high byte) and Status-Detail (low byte) of a Login Response.
type LoginStatus uint16

const (
	LoginSuccess            LoginStatus = 0x0000
	LoginInitiatorError     LoginStatus = 0x0200
	LoginAuthFailure        LoginStatus = 0x0201
	LoginForbidden          LoginStatus = 0x0202 // authorization failure
	LoginNotFound           LoginStatus = 0x0203
	LoginTargetRemoved      LoginStatus = 0x0204
	LoginUnsupportedVer     LoginStatus = 0x0205
	LoginTooManyConns       LoginStatus = 0x0206
	LoginMissingParam       LoginStatus = 0x0207
	LoginCantIncludeInSess  LoginStatus = 0x0208
	LoginSessTypeUnsupp     LoginStatus = 0x0209
	LoginSessionNotFound    LoginStatus = 0x020a
	LoginInvalidDuringLogin LoginStatus = 0x020b
	LoginTargetError        LoginStatus = 0x0300
	LoginServiceUnavail     LoginStatus = 0x0301
	LoginOutOfResources     LoginStatus = 0x0302
)

// Reject reasons (RFC 7143 11.17.1).
const (
	RejectDataDigest     = 0x02
	RejectSNACK          = 0x03
	RejectProtocolError  = 0x04
	RejectNotSupported   = 0x05
	RejectImmediate      = 0x06
	RejectTaskInProgress = 0x07
	RejectInvalidDataAck = 0x08
	RejectInvalidField   = 0x09
	RejectOutOfResources = 0x0a
	RejectWaitingLogout  = 0x0c
)

// Task management functions (RFC 7143 11.5.1).
const (
	TMFAbortTask       = 1
	TMFAbortTaskSet    = 2
	TMFClearACA        = 3
	TMFClearTaskSet    = 4
	TMFLUNReset        = 5
	TMFTargetWarmReset = 6
	TMFTargetColdReset = 7
	TMFTaskReassign    = 8
)

// AHS types (RFC 7143 11.2.2).
const (
	AHSExtendedCDB = 0x01
	AHSBidiReadLen = 0x02
)

// opName names an opcode for logs and errors.
func opName(op uint8) string {
	switch op {
	case OpNOPOut:
		return "NOP-Out"
	case OpSCSICmd:
		return "SCSI Command"
	case OpTaskMgmtReq:
		return "Task Management Request"
	case OpLoginReq:
		return "Login Request"
	case OpTextReq:
		return "Text Request"
	case OpDataOut:
		return "Data-Out"
	case OpLogoutReq:
		return "Logout Request"
	case OpSNACKReq:
		return "SNACK"
	case OpNOPIn:
		return "NOP-In"
	case OpSCSIResp:
		return "SCSI Response"
	case OpTaskMgmtResp:
		return "Task Management Response"
	case OpLoginResp:
		return "Login Response"
	case OpTextResp:
		return "Text Response"
	case OpDataIn:
		return "Data-In"
	case OpLogoutResp:
		return "Logout Response"
	case OpR2T:
		return "R2T"
	case OpAsyncMsg:
		return "Async Message"
	case OpReject:
		return "Reject"
	}
	return fmt.Sprintf("opcode 0x%02x", op)
}
