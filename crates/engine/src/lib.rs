//! milbridge-engine: a [`milbridge_mil::facts::VerifiedProgram`] compiled once into a plan and
//! evaluated many times on the CPU over caller-provided buffers.

pub mod reference;
