//! Where this trust sends subscribers' notifications: never to this
//! machine or a private network, unless its operator allows it
//! (`Settings::private_notifications`, for a trust whose subscribers are
//! inside its own network).
//!
//! A subscriber names the endpoint, so the rule must hold for every way a
//! name can come to mean a private address, not only for the address it
//! meant when it was checked:
//!
//! - **When a subscription is made or changed** (`check_endpoint`): its host
//!   is resolved and every address checked — a clear 400 at once.
//! - **At every connection**: the notification client (`notify_http`)
//!   resolves names through `PublicOnly`, which refuses a name any of whose
//!   addresses is private. A name that resolved to a public address when it
//!   was checked and resolves to a private one when it is used (DNS
//!   rebinding) reaches nothing: the delivery fails, stays owed and is tried
//!   again with back-off. A host written as an address cannot change; it is
//!   checked again before each delivery all the same
//!   (`check_delivery_endpoint`: the operator may have closed private
//!   networks since), without a lookup.
//! - The client follows no redirect and uses no proxy from the environment
//!   (a proxy would resolve the name itself, past this rule).
//!
//! Names are resolved by `Settings::names`: the system's resolver
//! (`SystemNames`), or one a test gives to play the rebinding attacker.

use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use citytrust_model::ngsi::NgsiError;
use futures::future::BoxFuture;

use crate::{Result, Service, ServiceError};

/// Turns a host name into the addresses it names now.
pub trait Names: Send + Sync + Debug {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The system's resolver (`getaddrinfo`, through Tokio).
#[derive(Debug)]
pub struct SystemNames;

impl Names for SystemNames {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// Whether an address is on this machine, a private or shared network, or
/// not an address a notification can be meant for (unspecified, broadcast,
/// multicast, reserved). IPv4 written inside IPv6 (mapped, compatible, or
/// the NAT64 prefix) is judged as the IPv4 address it carries.
pub(crate) fn private_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                // Shared address space (carrier-grade NAT).
                || (o[0] == 100 && (64..128).contains(&o[1]))
                // "This network", IETF protocol assignments, benchmarking,
                // and the reserved 240/4.
                || o[0] == 0
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0];
            let o = v6.octets();
            let carried = std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local, link-local, and the old site-local.
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || v6
                    .to_ipv4()
                    .is_some_and(|v4| private_address(IpAddr::V4(v4)))
                || (nat64 && private_address(IpAddr::V4(carried)))
        }
    }
}

/// The notification client's resolver: a name's addresses, unless any of
/// them is private (then none: the connection is not made).
#[derive(Debug)]
struct PublicOnly(Arc<dyn Names>);

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let names = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = names.lookup(host.clone()).await?;
            if ips.is_empty() || ips.iter().any(|ip| private_address(*ip)) {
                return Err(format!(
                    "'{host}' resolves to an address on this machine or a private network"
                )
                .into());
            }
            // Port 0: the URL's (or the scheme's) port is put in its place.
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

fn refused(host: &str) -> ServiceError {
    NgsiError::bad(format!(
        "notification endpoint '{host}' is on this machine or a private network, which \
         this trust does not notify (its operator can allow it)"
    ))
    .into()
}

impl Service {
    /// A notification endpoint, when a subscription is made or changed:
    /// refused if its host is on this machine or a private network (unless
    /// `Settings::private_notifications`); a name is resolved and every
    /// address it names is checked.
    pub(crate) async fn check_endpoint(&self, uri: &str) -> Result<()> {
        if self.settings.private_notifications {
            return Ok(());
        }
        let url = url::Url::parse(uri).map_err(|_| NgsiError::bad("the endpoint is not a URL"))?;
        let ips = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(url::Host::Domain(host)) => {
                if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") {
                    return Err(refused(host));
                }
                self.settings
                    .names
                    .lookup(host.to_string())
                    .await
                    .map_err(|_| {
                        NgsiError::bad(format!("notification endpoint '{host}' cannot be resolved"))
                    })?
            }
            None => return Err(NgsiError::bad("the endpoint names no host").into()),
        };
        if ips.is_empty() || ips.iter().any(|ip| private_address(*ip)) {
            return Err(refused(url.host_str().unwrap_or_default()));
        }
        Ok(())
    }

    /// A notification endpoint, before a delivery: a host written as an
    /// address is checked (no lookup); a name is checked by the client's
    /// resolver when it connects (`PublicOnly`).
    pub(crate) fn check_delivery_endpoint(&self, uri: &str) -> Result<()> {
        if self.settings.private_notifications {
            return Ok(());
        }
        let url = url::Url::parse(uri).map_err(|_| NgsiError::bad("the endpoint is not a URL"))?;
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(NgsiError::bad("the endpoint names no host").into()),
        };
        if private_address(ip) {
            return Err(refused(url.host_str().unwrap_or_default()));
        }
        Ok(())
    }

    /// The client notifications are sent with (made once): no redirects,
    /// no proxy, bounded connects, and — unless private networks are
    /// allowed — names resolved through `PublicOnly`.
    pub(crate) fn notify_http(&self) -> Result<&reqwest::Client> {
        if let Some(c) = self.notify_client.get() {
            return Ok(c);
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            // Header names as usually written (`Link`, `Content-Type`): some
            // receivers of notifications match them case-sensitively.
            .http1_title_case_headers();
        if !self.settings.private_notifications {
            builder = builder.dns_resolver(Arc::new(PublicOnly(self.settings.names.clone())));
        }
        let client = builder
            .build()
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(self.notify_client.get_or_init(|| client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised_in_every_form() {
        for private in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(
                private_address(private.parse().unwrap()),
                "{private} is private"
            );
        }
        for public in [
            "93.184.215.14",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(
                !private_address(public.parse().unwrap()),
                "{public} is public"
            );
        }
    }
}
