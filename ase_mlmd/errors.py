"""Exception classes of ase_mlmd.

Every error a user can trigger with bad input is one of these, and its message says what was
wrong and what to do about it. They subclass the closest built-in exception so that generic
``except ValueError`` code keeps working.
"""

from __future__ import annotations


class MLMDError(Exception):
    """Base class of every ase_mlmd error."""


class InvalidStructureError(MLMDError, ValueError):
    """A structure cannot be evaluated: NaN/inf coordinates, a degenerate periodic cell, ..."""


class UnsupportedSpeciesError(MLMDError, ValueError):
    """A structure contains elements the model was not trained on."""


class ModelFileError(MLMDError, OSError):
    """A weights or model file is missing, truncated or not in the expected format."""


class ChecksumMismatchError(ModelFileError):
    """A weights file does not have the sha256 its model card declares."""


class UntrustedModelError(MLMDError, PermissionError):
    """Loading this file would execute code from it; the caller has not said it trusts it."""


class CardError(MLMDError, ValueError):
    """A model card (TOML) is malformed or names something that does not exist."""


class UnknownCalculatorError(MLMDError, KeyError):
    """No model card or backend has this name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BackendNotAvailableError(MLMDError, ImportError):
    """An optional backend package (nequip, schnetpack) is not installed."""


class DeviceNotAvailableError(MLMDError, RuntimeError):
    """A device was requested (e.g. ``cuda``) that this machine does not have."""


class DataFormatError(MLMDError, ValueError):
    """A data file is corrupt, truncated, in another layout than the one named, or its units
    were not stated. The message names the file (and frame, where there is one)."""


class MissingLabelsError(DataFormatError):
    """Frames lack a label that was requested (energy, forces); names the file and frame."""


class DatasetSplitError(MLMDError, ValueError):
    """A split is impossible: a part would be empty, sizes exceed the data, or the test/val
    parts hold species that training never saw."""


class CheckpointMismatchError(MLMDError, ValueError):
    """A checkpoint cannot be resumed by this run (other model, data, or configuration)."""


class IncompatibleTrajectoriesError(MLMDError, ValueError):
    """Two trajectories that are compared differ in species, atom order or cell convention."""


class TrajectoryTooShortError(MLMDError, ValueError):
    """A trajectory has fewer frames than a metric needs; says how many it needs."""


class SimulationUnstableError(MLMDError, RuntimeError):
    """A simulation blew up (NaN or runaway energy) and could not be recovered."""


class OutputLockedError(MLMDError, RuntimeError):
    """Another process holds the lock of an output folder or file (it is writing there now);
    the message names that process (PID, host, command, since when) and what to do."""


class CorruptOutputError(MLMDError, OSError):
    """A file a run wrote, or a file an earlier run left to resume from, cannot be read back;
    the message names the file and what to do (start afresh, delete it)."""


class MappingError(MLMDError, ValueError):
    """A coarse-grained mapping is invalid (an atom left out or in two beads where that is not
    allowed, more beads than atoms, an empty bead) or does not fit the structure it is applied
    to (other atom count or element order); names the file, frame, bead or atom."""


class StructureFileError(MLMDError, OSError):
    """A structure file given on the command line or to a workflow is missing or unreadable."""


class UnknownParameterError(MLMDError, TypeError):
    """A calculator was given a parameter it does not have (e.g. a misspelt ``-p key=value``)."""


class DeviceMismatchError(MLMDError, RuntimeError):
    """A model and the state it is asked to evaluate are on different devices."""


class BackmapError(MLMDError, ValueError):
    """A backmapping request cannot be served: a sample count below 1, CG frames that do not
    fit the backmapper's mapping, or a backmapper card applied to another molecule; names the
    frame, bead or option (``--samples``) that is wrong."""


class InvalidMoleculeError(MLMDError, ValueError):
    """A molecule cannot be used as given: a SMILES that does not parse (the message names the
    string and its file and line), disconnected fragments where they are refused, unspecified
    stereo where it is refused, or a structure whose atoms do not match its molecular graph."""


class WorldSizeMismatchError(CheckpointMismatchError):
    """A training checkpoint written by a run on N processes (``--devices N``) is resumed with
    another number of processes; the message names both and the ``--devices`` to pass."""


class DistributedTrainingError(MLMDError, RuntimeError):
    """A distributed (multi-process) training run cannot start or was stopped: fewer GPUs than
    ``--devices``, a training process killed by a signal, or Ctrl-C; all processes are stopped
    and the message says how to resume."""


class LammpsExportError(MLMDError, ValueError):
    """A model cannot be exported to LAMMPS as asked: it gives no per-atom energies (needed to
    split the energy over MPI ranks), its number of interaction layers is unknown, or it cannot
    run in the requested precision (``--dtype float64`` for a model fixed in float32)."""


class LammpsInputError(MLMDError, ValueError):
    """A LAMMPS input does not fit the exported model: element names on ``pair_coeff`` that the
    model lacks, a data file with more or fewer atom types than elements named, units other
    than ``metal``, or a box whose subdomain per MPI rank is smaller than the model's cutoff
    (too many ranks for the box); the message says which and what to change."""


class PhononSupercellError(MLMDError, ValueError):
    """A finite-displacement phonon supercell is too small for the calculator's interaction
    range: a displaced atom would feel its own periodic images, which aliases the force
    constants. The message gives the supercell widths, the cutoff and the repeat to use."""


class ConformerRequestError(MLMDError, ValueError):
    """A conformer request cannot be met: a count n <= 0, an unknown generation method, a
    method that needs a model that was not given, or no conformer could be made."""
