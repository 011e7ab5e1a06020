//! CityTrust's domain model: the catalogue's datasets with their classification
//! and data states, organisations, groups, people and their roles, and the rules
//! about who may change what.
//!
//! This crate does no IO and never reads the clock or a random source: callers
//! pass time in. Types here are what the store persists and the API speaks.

pub mod access;
pub mod account;
pub mod authz;
pub mod catalogue;
pub mod federation;
pub mod ngsi;
pub mod participation;
pub mod problem;
pub mod projects;
pub mod residents;
pub mod validation;

pub use access::{
    AccessLevel, AccessRequest, Agreement, AgreementStatus, NewAccessRequest, NewVote, Purpose,
    PurposeKind, RequestStatus, Sharing,
};
pub use account::{
    Actor, Authority, AuthorityArea, AuthorityKind, Delegation, Group, NewAuthority, NewGroup,
    NewOrganization, NewUser, Organization, OrganizationKind, Role, User,
};
pub use authz::Refusal;
pub use catalogue::{
    Dataset, DatasetInput, DatasetMetadata, Spectrum, Theme, UpdateFrequency, ValueChainRole,
};
pub use problem::ProblemCode;
pub use validation::{FieldError, ValidationErrors};
