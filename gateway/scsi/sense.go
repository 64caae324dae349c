package scsi

import "encoding/binary"

// Sense keys (SPC-4 table 47).
const (
	SenseNoSense        = 0x0
	SenseRecoveredError = 0x1
	SenseNotReady       = 0x2
	SenseMediumError    = 0x3
	SenseHardwareError  = 0x4
	SenseIllegalRequest = 0x5
	SenseUnitAttention  = 0x6
	SenseDataProtect    = 0x7
	SenseAbortedCommand = 0xB
	SenseMiscompare     = 0xE
)

// Additional sense codes, ASC in the high byte and ASCQ in the low byte (SPC-4 table 48).
const (
	ASCNoAdditionalSense          = 0x0000
	ASCWriteError                 = 0x0C00
	ASCInvalidFieldInCmdIU        = 0x0E03 // INVALID FIELD IN COMMAND INFORMATION UNIT (data-out shorter than the CDB asks)
	ASCUnrecoveredReadError       = 0x1100
	ASCParameterListLengthError   = 0x1A00
	ASCMiscompareDuringVerify     = 0x1D00
	ASCInvalidCommandOpcode       = 0x2000
	ASCLBAOutOfRange              = 0x2100
	ASCInvalidFieldInCDB          = 0x2400
	ASCLUNotSupported             = 0x2500
	ASCInvalidFieldInParamList    = 0x2600
	ASCParameterValueInvalid      = 0x2602
	ASCWriteProtected             = 0x2700
	ASCPowerOnResetOccurred       = 0x2900
	ASCPowerOnOccurred            = 0x2901
	ASCBusResetOccurred           = 0x2902 // SCSI BUS RESET OCCURRED: reported after a target (warm/cold) reset
	ASCBusDeviceResetOccurred     = 0x2903 // BUS DEVICE RESET FUNCTION OCCURRED: reported after a LUN reset
	ASCITNexusLossOccurred        = 0x2907
	ASCModeParametersChanged      = 0x2A01
	ASCCapacityDataChanged        = 0x2A09
	ASCSavingParamsNotSupported   = 0x3900
	ASCMediumRemovalPrevented     = 0x5302
	ASCReportedLUNsDataChanged    = 0x3F0E
	ASCInternalTargetFailure      = 0x4400
	ASCLUNotReadyManualInterv     = 0x0403
	ASCLUNotReadyFormatInProgress = 0x0404
)

// Fixed-format sense data layout (SPC-4 4.5.3, table 45). Offsets in bytes.
const (
	senseOffResponseCode = 0  // bit 7 VALID (INFORMATION is meaningful), bits 6-0 response code 0x70
	senseOffKey          = 2  // bits 3-0 sense key; bit 5 ILI
	senseOffInformation  = 3  // 4 bytes, big-endian
	senseOffAddLength    = 7  // additional sense length: bytes after this one
	senseOffCmdSpecific  = 8  // 4 bytes, command-specific information
	senseOffASC          = 12 // additional sense code
	senseOffASCQ         = 13 // additional sense code qualifier
	senseOffFRU          = 14 // field replaceable unit code
	senseOffSKS          = 15 // sense-key specific, 3 bytes: SKSV|C/D|BPV|bit pointer, then field pointer
	senseFixedLen        = 18

	senseResponseCurrent = 0x70
	senseValid           = 0x80
	sksValid             = 0x80 // SKSV
	sksCommandData       = 0x40 // C/D: 1 = the field is in the CDB, 0 = in the parameter list
	sksBitPointerValid   = 0x08 // BPV
)

// senseError is a CHECK CONDITION about to be reported. It is an error so that deep helpers can return it.
type senseError struct {
	key  byte
	asc  uint16
	info uint64 // INFORMATION field when infoValid (an LBA or a byte offset)

	infoValid bool
	// Sense-key specific field pointer (ILLEGAL REQUEST): valid when sksv.
	sksv  bool
	inCDB bool   // C/D bit
	field uint16 // byte offset of the bad field in the CDB or parameter list
	bit   int8   // most significant bit of the bad field, or -1 when the whole byte is meant
}

func (e *senseError) Error() string { return "scsi: check condition" }

// bytes encodes e as fixed-format current sense data.
func (e *senseError) bytes() []byte {
	b := make([]byte, senseFixedLen)
	b[senseOffResponseCode] = senseResponseCurrent
	b[senseOffKey] = e.key & 0x0f
	if e.infoValid {
		b[senseOffResponseCode] |= senseValid
		binary.BigEndian.PutUint32(b[senseOffInformation:], uint32(e.info))
	}
	b[senseOffAddLength] = senseFixedLen - (senseOffAddLength + 1)
	b[senseOffASC] = byte(e.asc >> 8)
	b[senseOffASCQ] = byte(e.asc)
	if e.sksv {
		s := byte(sksValid)
		if e.inCDB {
			s |= sksCommandData
		}
		if e.bit >= 0 {
			s |= sksBitPointerValid | byte(e.bit&7)
		}
		b[senseOffSKS] = s
		binary.BigEndian.PutUint16(b[senseOffSKS+1:], e.field)
	}
	return b
}

// newSense returns sense key/ASC without sense-key specific data.
func newSense(key byte, asc uint16) *senseError { return &senseError{key: key, asc: asc, bit: -1} }

// invalidCDB is INVALID FIELD IN CDB pointing at byte field, bit (-1: the whole byte).
func invalidCDB(field int, bit int) *senseError {
	return &senseError{key: SenseIllegalRequest, asc: ASCInvalidFieldInCDB, sksv: true, inCDB: true,
		field: uint16(field), bit: int8(bit)}
}

// invalidParam is INVALID FIELD IN PARAMETER LIST pointing at byte field, bit of the data-out buffer.
func invalidParam(field int, bit int) *senseError {
	return &senseError{key: SenseIllegalRequest, asc: ASCInvalidFieldInParamList, sksv: true,
		field: uint16(field), bit: int8(bit)}
}

// paramListLength is PARAMETER LIST LENGTH ERROR.
func paramListLength() *senseError { return newSense(SenseIllegalRequest, ASCParameterListLengthError) }

// lbaOutOfRange is LOGICAL BLOCK ADDRESS OUT OF RANGE; INFORMATION is left invalid as SBC-3 allows.
func lbaOutOfRange() *senseError { return newSense(SenseIllegalRequest, ASCLBAOutOfRange) }

// invalidOpcode is INVALID COMMAND OPERATION CODE pointing at CDB byte 0 (or the service action byte).
func invalidOpcode(field int, bit int) *senseError {
	return &senseError{key: SenseIllegalRequest, asc: ASCInvalidCommandOpcode, sksv: true, inCDB: true,
		field: uint16(field), bit: int8(bit)}
}

// writeProtected is DATA PROTECT, WRITE PROTECTED.
func writeProtected() *senseError { return newSense(SenseDataProtect, ASCWriteProtected) }

// miscompare is MISCOMPARE DURING VERIFY OPERATION with INFORMATION = byte offset of the first mismatch.
func miscompare(offset uint64) *senseError {
	return &senseError{key: SenseMiscompare, asc: ASCMiscompareDuringVerify, info: offset, infoValid: true, bit: -1}
}

// checkCondition turns e into a Result.
func checkCondition(e *senseError) Result {
	return Result{Status: StatusCheckCondition, Sense: e.bytes()}
}

// SenseKey, SenseASC and SenseInfo decode fixed-format sense data for transports, tests and logs; they return
// zero values for data too short to hold the field.
func SenseKey(s []byte) byte {
	if len(s) <= senseOffKey {
		return 0
	}
	return s[senseOffKey] & 0x0f
}

// SenseASC returns ASC<<8 | ASCQ.
func SenseASC(s []byte) uint16 {
	if len(s) <= senseOffASCQ {
		return 0
	}
	return uint16(s[senseOffASC])<<8 | uint16(s[senseOffASCQ])
}

// SenseFieldPointer returns the sense-key specific field pointer: whether it is valid, whether it points
// into the CDB, the byte, and the bit (-1 when no bit pointer).
func SenseFieldPointer(s []byte) (valid, inCDB bool, field int, bit int) {
	if len(s) < senseFixedLen || s[senseOffSKS]&sksValid == 0 {
		return false, false, 0, -1
	}
	bit = -1
	if s[senseOffSKS]&sksBitPointerValid != 0 {
		bit = int(s[senseOffSKS] & 7)
	}
	return true, s[senseOffSKS]&sksCommandData != 0, int(binary.BigEndian.Uint16(s[senseOffSKS+1:])), bit
}

// SenseInformation returns the INFORMATION field and whether VALID is set.
func SenseInformation(s []byte) (uint32, bool) {
	if len(s) < senseOffInformation+4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(s[senseOffInformation:]), s[senseOffResponseCode]&senseValid != 0
}
