package scsi

import (
	"context"

	"opensan/gateway/block"
)

// LUConfig describes one logical unit.
type LUConfig struct {
	Device   block.Device
	ReadOnly bool
	// Serial is the unit serial number (VPD 0x80) and the seed of the NAA designator (VPD 0x83); it must be
	// stable across restarts and unique per appliance. Empty: derived from the target name and LUN.
	Serial string
	// Vendor (8), Product (16) and Revision (4) for INQUIRY, space-padded; empty means the product's own.
	Vendor, Product, Revision string
}

// Target is a SCSI target device: a set of logical units and the tasks running on them.
//
// THIS FILE IS THE CONTRACT between the transport and the SCSI core; the implementation fills in the
// bodies. Every method is safe for concurrent use.
type Target struct {
	name string
}

// NewTarget returns a target with no logical units. name is the SCSI target name (for iSCSI the IQN), used
// in VPD 0x83 designators.
func NewTarget(name string) *Target { return &Target{name: name} }

// Name returns the target name.
func (t *Target) Name() string { return t.name }

// AddLU adds a logical unit at lun. Other nexuses get a REPORTED LUNS DATA HAS CHANGED unit attention.
func (t *Target) AddLU(lun uint64, cfg LUConfig) error { panic("unimplemented") }

// LUNs lists the LUNs nexus n may see, ascending.
func (t *Target) LUNs(n *Nexus) []uint64 { panic("unimplemented") }

// Execute runs cmd and returns its result. It returns early, with Result.Aborted set and no response
// due, when the task is aborted by a task management function or ctx is cancelled (the connection died).
// REPORT LUNS, INQUIRY and REQUEST SENSE work for LUNs that do not exist, as SPC requires.
func (t *Target) Execute(ctx context.Context, cmd *Command) Result { panic("unimplemented") }

// AbortTask aborts the task tagged tag from nexus n on lun and returns after it has stopped.
func (t *Target) AbortTask(n *Nexus, lun uint64, tag uint64) TMFResponse { panic("unimplemented") }

// AbortTaskSet aborts every task of nexus n on lun.
func (t *Target) AbortTaskSet(n *Nexus, lun uint64) TMFResponse { panic("unimplemented") }

// ClearTaskSet aborts every task on lun, from every nexus.
func (t *Target) ClearTaskSet(n *Nexus, lun uint64) TMFResponse { panic("unimplemented") }

// LUNReset aborts every task on lun and sets a unit attention for every other nexus.
func (t *Target) LUNReset(n *Nexus, lun uint64) TMFResponse { panic("unimplemented") }

// TargetReset resets every logical unit (warm) or also forgets mode pages and reservations (cold).
func (t *Target) TargetReset(n *Nexus, cold bool) TMFResponse { panic("unimplemented") }

// NexusGone aborts the tasks of a nexus whose session ended and forgets its per-nexus state.
func (t *Target) NexusGone(n *Nexus) { panic("unimplemented") }

// Close stops every task and flushes every logical unit's device. It does not close the devices.
func (t *Target) Close() error { panic("unimplemented") }
