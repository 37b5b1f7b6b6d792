//! `lockbox policy ...` and `lockbox token ...`: ACL policies and tokens,
//! on a local store or a server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use lockbox_engine::{role_policy, TokenInfo, TokenRequest};
use serde_json::{json, Value};

use crate::target::Target;
use crate::{block_on, json_line, line, parse_period, target_args, CliError, CliResult, Global};

/// ACL policies (Vault's HCL or JSON form).
#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Create or replace a policy from a file (`-` for stdin) or a built-in role.
    Write {
        /// Policy name.
        name: String,
        /// HCL or JSON policy file, `-` for stdin (omit with --role).
        #[arg(required_unless_present = "role", conflicts_with = "role")]
        file: Option<PathBuf>,
        /// Instead of a file: a built-in role (app, operator, auditor, admin)...
        #[arg(long)]
        role: Option<String>,
        /// ...over the keys matching this pattern (e.g. `billing-*`).
        #[arg(long, default_value = "*", requires = "role")]
        keys: String,
    },
    /// Print a policy.
    Read {
        /// Policy name.
        name: String,
    },
    /// List policy names.
    List,
    /// Delete a policy.
    Delete {
        /// Policy name.
        name: String,
    },
}

/// Tokens: create, look up, renew, revoke.
#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token with policies; prints the token (shown once).
    Create {
        /// A policy (repeat for several).
        #[arg(long = "policy", required = true)]
        policies: Vec<String>,
        /// Time to live (e.g. 1h, 30d; 0 = none, needs sudo).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Refuse renewals.
        #[arg(long)]
        no_renew: bool,
        /// A label shown in lookups and the audit log.
        #[arg(long, default_value = "")]
        display_name: String,
        /// Requests per second for this token (0 = the server's default).
        #[arg(long, default_value_t = 0)]
        rate_limit: u32,
    },
    /// Show a token by accessor (or the caller's own token).
    Lookup {
        /// Accessor (default: the token in use).
        #[arg(long)]
        accessor: Option<String>,
    },
    /// Extend a renewable token.
    Renew {
        /// Accessor (default: the token in use).
        #[arg(long)]
        accessor: Option<String>,
        /// By how long (default: its TTL).
        #[arg(long)]
        increment: Option<String>,
    },
    /// Revoke a token by accessor.
    Revoke {
        /// Accessor.
        #[arg(long)]
        accessor: String,
    },
}

fn token_json(i: &TokenInfo) -> Value {
    json!({
        "accessor": i.accessor,
        "policies": i.policies,
        "display_name": i.display_name,
        "creation_time": i.created_at,
        "expire_time": i.expire_at,
        "renewable": i.renewable,
        "ttl": i.ttl_left(lockbox_engine::now()),
        "role": i.role(),
        "rate_limit": i.rate_limit,
    })
}

fn pretty(v: &Value) -> CliResult<Vec<u8>> {
    let mut s = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::new(format!("cannot print JSON: {e}")))?;
    s.push('\n');
    Ok(s.into_bytes())
}

pub(crate) fn policy_cmd(c: PolicyCommand, g: &Global) -> CliResult<Vec<u8>> {
    block_on(async {
        let t = Target::open(&target_args(g), true).await?;
        let out = match c {
            PolicyCommand::Write {
                name,
                file,
                role,
                keys,
            } => {
                let text = match (role, file) {
                    (Some(r), _) => role_policy(&r, &keys)?,
                    (None, Some(f)) if f.as_os_str() == "-" => {
                        String::from_utf8(crate::read_stdin()?)
                            .map_err(|_| CliError::new("the policy is not UTF-8"))?
                    }
                    (None, Some(f)) => std::fs::read_to_string(&f).map_err(|e| {
                        CliError::new(format!("cannot read policy {}: {e}", f.display()))
                    })?,
                    (None, None) => return Err(CliError::new("give a policy file or --role")),
                };
                match &t {
                    Target::Local(e) => e.policy_put(&name, &text).await?,
                    Target::Remote { .. } => {
                        t.call(
                            "PUT",
                            &format!("sys/policies/acl/{name}"),
                            Some(json!({ "policy": text })),
                        )
                        .await?;
                    }
                }
                line(format!("policy {name} written"))
            }
            PolicyCommand::Read { name } => {
                let text = match &t {
                    Target::Local(e) => e
                        .policy_text(&name)
                        .await?
                        .ok_or_else(|| CliError::new(format!("no policy named {name}")))?,
                    Target::Remote { .. } => {
                        let v = t
                            .call("GET", &format!("sys/policies/acl/{name}"), None)
                            .await?;
                        v["data"]["policy"].as_str().unwrap_or_default().to_owned()
                    }
                };
                if g.json {
                    json_line(&json!({ "name": name, "policy": text }))?
                } else {
                    text.into_bytes()
                }
            }
            PolicyCommand::List => {
                let names: Vec<String> = match &t {
                    Target::Local(e) => e.policy_list().await?,
                    Target::Remote { .. } => {
                        let v = t.call("LIST", "sys/policies/acl", None).await?;
                        v["data"]["keys"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_owned)
                                    .collect()
                            })
                            .unwrap_or_default()
                    }
                };
                if g.json {
                    json_line(&json!({ "keys": names }))?
                } else {
                    let mut s = names.join("\n");
                    s.push('\n');
                    s.into_bytes()
                }
            }
            PolicyCommand::Delete { name } => {
                match &t {
                    Target::Local(e) => e.policy_delete(&name).await?,
                    Target::Remote { .. } => {
                        t.call("DELETE", &format!("sys/policies/acl/{name}"), None)
                            .await?;
                    }
                }
                line(format!("policy {name} deleted"))
            }
        };
        t.finish().await;
        Ok(out)
    })
}

pub(crate) fn token_cmd(c: TokenCommand, g: &Global) -> CliResult<Vec<u8>> {
    block_on(async {
        let t = Target::open(&target_args(g), true).await?;
        let out = match c {
            TokenCommand::Create {
                policies,
                ttl,
                no_renew,
                display_name,
                rate_limit,
            } => {
                let ttl = parse_period(&ttl)?;
                let (token, info) = match &t {
                    Target::Local(e) => {
                        let (tok, info) = e
                            .create_token(&TokenRequest {
                                policies,
                                ttl,
                                renewable: !no_renew,
                                explicit_max_ttl: 0,
                                display_name,
                                meta: BTreeMap::new(),
                                rate_limit,
                            })
                            .await?;
                        (tok, token_json(&info))
                    }
                    Target::Remote { .. } => {
                        let v = t
                            .call(
                                "POST",
                                "auth/token/create",
                                Some(json!({
                                    "policies": policies,
                                    "ttl": ttl,
                                    "renewable": !no_renew,
                                    "display_name": display_name,
                                    "rate_limit": rate_limit,
                                })),
                            )
                            .await?;
                        let a = &v["auth"];
                        (
                            a["client_token"].as_str().unwrap_or_default().to_owned(),
                            json!({
                                "accessor": a["accessor"],
                                "policies": a["policies"],
                                "ttl": a["lease_duration"],
                                "renewable": a["renewable"],
                            }),
                        )
                    }
                };
                if g.json {
                    let mut v = info;
                    v["token"] = Value::from(token);
                    json_line(&v)?
                } else {
                    line(format!(
                        "token: {token}\naccessor: {}\npolicies: {}\nttl: {}",
                        info["accessor"].as_str().unwrap_or_default(),
                        info["policies"],
                        info["ttl"]
                    ))
                }
            }
            TokenCommand::Lookup { accessor } => {
                let v = match (&t, accessor) {
                    (Target::Local(e), Some(a)) => token_json(&*e.lookup_accessor(&a).await?),
                    (Target::Local(_), None) => {
                        return Err(CliError::new(
                            "give --accessor (a local store has no token in use)",
                        ))
                    }
                    (Target::Remote { .. }, Some(a)) => t
                        .call(
                            "POST",
                            "auth/token/lookup-accessor",
                            Some(json!({ "accessor": a })),
                        )
                        .await?["data"]
                        .clone(),
                    (Target::Remote { .. }, None) => {
                        t.call("GET", "auth/token/lookup-self", None).await?["data"].clone()
                    }
                };
                pretty(&v)?
            }
            TokenCommand::Renew {
                accessor,
                increment,
            } => {
                let inc = increment
                    .as_deref()
                    .map(parse_period)
                    .transpose()?
                    .unwrap_or(0);
                let v = match (&t, accessor) {
                    (Target::Local(e), Some(a)) => token_json(&e.renew_accessor(&a, inc).await?),
                    (Target::Local(_), None) => return Err(CliError::new("give --accessor")),
                    (Target::Remote { .. }, a) => {
                        let (path, body) = match a {
                            Some(a) => (
                                "auth/token/renew-accessor",
                                json!({ "accessor": a, "increment": inc }),
                            ),
                            None => ("auth/token/renew-self", json!({ "increment": inc })),
                        };
                        t.call("POST", path, Some(body)).await?["auth"].clone()
                    }
                };
                pretty(&v)?
            }
            TokenCommand::Revoke { accessor } => {
                match &t {
                    Target::Local(e) => e.revoke_accessor(&accessor).await?,
                    Target::Remote { .. } => {
                        t.call(
                            "POST",
                            "auth/token/revoke-accessor",
                            Some(json!({ "accessor": accessor })),
                        )
                        .await?;
                    }
                }
                line("revoked".into())
            }
        };
        t.finish().await;
        Ok(out)
    })
}
