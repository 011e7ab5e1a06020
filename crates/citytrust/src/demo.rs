//! The demo city: real open data from Barcelona, Seattle, Jersey City, Cairns
//! and Montréal, catalogued under a demo City Data Office, with demo accounts.
//!
//! Loading is idempotent: anything already present is kept, so an existing
//! demo directory is reused and an interrupted load completes on the next run.

use anyhow::Context;
use citytrust_model::catalogue::DatasetInput;
use citytrust_model::{Actor, NewGroup, NewOrganization, NewUser, Role};
use citytrust_service::{Service, ServiceError};
use serde::Deserialize;

/// The catalogue, organisations and accounts of the demo (see demo/README.md).
const MANIFEST: &str = include_str!("../../../demo/manifest.json");

pub const ACCOUNTS: [(&str, &str); 7] = [
    ("admin", "administrator"),
    ("trustee1", "trustee"),
    ("trustee2", "trustee"),
    ("trustee3", "trustee"),
    (
        "owner",
        "member of the City Data Office, which owns the city's datasets",
    ),
    ("analyst", "member of City University (a research partner)"),
    ("resident", "a resident"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    organizations: Vec<NewOrganization>,
    groups: Vec<NewGroup>,
    users: Vec<DemoUser>,
    datasets: Vec<DemoDataset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoUser {
    username: String,
    display_name: String,
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    organization_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoDataset {
    /// The file under demo/data/ holding its content (none for metadata-only entries).
    #[allow(dead_code)]
    file: Option<String>,
    dataset: DatasetInput,
}

pub struct Loaded {
    /// Whether anything was created by this run.
    pub fresh: bool,
    pub datasets: usize,
}

fn manifest() -> anyhow::Result<Manifest> {
    let mut de = serde_json::Deserializer::from_str(MANIFEST);
    serde_path_to_error(&mut de)
}

fn serde_path_to_error<'de, T: Deserialize<'de>>(
    de: &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
) -> anyhow::Result<T> {
    T::deserialize(de).context("demo/manifest.json is invalid")
}

/// Load whatever of the demo is missing. Returns what is there afterwards.
pub async fn load(service: &Service, password: &str) -> anyhow::Result<Loaded> {
    let m = manifest()?;
    let mut created = 0usize;
    let admin_spec = m
        .users
        .iter()
        .find(|u| u.roles.contains(&Role::Administrator))
        .context("the demo needs an administrator")?;
    let admin = match service.store().get_user(&admin_spec.username).await? {
        Some(stored) => stored.user,
        None => {
            created += 1;
            service
                .insert_user(new_user(admin_spec, password))
                .await
                .map_err(|e| anyhow::anyhow!("demo administrator: {e}"))?
        }
    };
    let actor = Actor::from_user(&admin);
    for org in m.organizations {
        let id = org.id.clone();
        created += kept(
            service.create_organization(&actor, org).await.map(|_| ()),
            &format!("organisation {id}"),
        )?;
    }
    for user in m.users.iter().filter(|u| u.username != admin.username) {
        created += kept(
            service
                .insert_user(new_user(user, password))
                .await
                .map(|_| ()),
            &format!("account {}", user.username),
        )?;
    }
    for group in m.groups {
        let id = group.id.clone();
        created += kept(
            service.create_group(&actor, group).await.map(|_| ()),
            &format!("group {id}"),
        )?;
    }
    for d in m.datasets {
        let id = d.dataset.id.clone().unwrap_or_default();
        if service.get_dataset(&id).await.is_ok() {
            continue;
        }
        service
            .create_dataset(&actor, d.dataset)
            .await
            .map_err(|e| anyhow::anyhow!("demo dataset {id}: {e}"))?;
        created += 1;
    }
    Ok(Loaded {
        fresh: created > 0,
        datasets: service.catalogue_size(),
    })
}

fn new_user(u: &DemoUser, password: &str) -> NewUser {
    NewUser {
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        email: Some(format!("{}@citytrust.example", u.username)),
        password: password.to_string(),
        roles: u.roles.clone(),
        organization_ids: u.organization_ids.clone(),
    }
}

/// 1 if created, 0 if it was already there; other errors stop the load.
fn kept(result: Result<(), ServiceError>, what: &str) -> anyhow::Result<usize> {
    match result {
        Ok(()) => Ok(1),
        Err(ServiceError::Conflict(_)) => Ok(0),
        Err(e) => Err(anyhow::anyhow!("demo {what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_manifest_parses_and_every_dataset_validates() {
        let m = super::manifest().unwrap();
        assert!(m.datasets.len() >= 16);
        for d in m.datasets {
            let id = d.dataset.id.clone().unwrap();
            if let Some(file) = &d.file {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../demo/data")
                    .join(file);
                assert!(path.is_file(), "{id}: {} is missing", path.display());
            }
            d.dataset.validate().unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }
}
