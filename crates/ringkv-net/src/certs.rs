//! Certificate generation for `ringkv certs`: a cluster CA, node
//! certificates (server and client use, since nodes call each other), each
//! naming its node id as `ringkv://node/<id>`, a client certificate, an
//! operator certificate naming `ringkv://operator/<name>`, and the
//! cluster's gossip keyring.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::NetError;
use crate::gossip::{KEYRING_FILE, Keyring};
use crate::tls::{NODE_URI, OPERATOR_URI, SERVER_NAME, valid_name};

const CA_NAME: &str = "ringkv cluster CA";

fn gen_err(e: rcgen::Error) -> NetError {
    NetError::CertGen(e.to_string())
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn write(path: PathBuf, contents: &str, written: &mut Vec<PathBuf>) -> Result<(), NetError> {
    std::fs::write(&path, contents).map_err(|e| NetError::File { path: path.clone(), reason: e.to_string() })?;
    written.push(path);
    Ok(())
}

/// A certificate's subject alternative names: DNS names and addresses, and
/// the ringkv name (`ringkv://node/<id>` or `ringkv://operator/<name>`).
struct Names {
    sans: Vec<String>,
    uri: Option<String>,
}

/// The key type of the certificates made here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// ECDSA P-256: what every TLS stack accepts.
    #[default]
    EcdsaP256,
    /// Ed25519: signatures of one fixed length, so that the simulator's TLS
    /// handshakes are the same size in every run (an ECDSA signature's DER
    /// length varies with its random nonce).
    Ed25519,
}

impl KeyAlgorithm {
    fn generate(self) -> Result<KeyPair, NetError> {
        match self {
            KeyAlgorithm::EcdsaP256 => KeyPair::generate(),
            KeyAlgorithm::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        }
        .map_err(gen_err)
    }
}

#[allow(clippy::too_many_arguments)]
fn issue(
    dir: &Path,
    stem: &str,
    common_name: &str,
    names: Names,
    usage: Vec<ExtendedKeyUsagePurpose>,
    issuer: &Issuer<'_, KeyPair>,
    algorithm: KeyAlgorithm,
    written: &mut Vec<PathBuf>,
) -> Result<(), NetError> {
    let mut params = CertificateParams::new(names.sans).map_err(gen_err)?;
    if let Some(uri) = names.uri {
        params.subject_alt_names.push(SanType::URI(uri.as_str().try_into().map_err(gen_err)?));
    }
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.extended_key_usages = usage;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = algorithm.generate()?;
    let cert = params.signed_by(&key, issuer).map_err(gen_err)?;
    write(dir.join(format!("{stem}.crt")), &cert.pem(), written)?;
    write(dir.join(format!("{stem}.key")), &key.serialize_pem(), written)
}

fn node_sans(name: &str, extra: &[String]) -> Vec<String> {
    let mut sans = vec![SERVER_NAME.to_string(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
    if name != "node" {
        sans.push(name.to_string());
    }
    sans.extend(extra.iter().cloned());
    sans.dedup();
    sans
}

/// Creates a new CA, the shared `node` certificate (it names no node id, so
/// only a standalone node can serve with it), one certificate per node id
/// in `nodes`, `client`, and `gossip.key`, a keyring of one new random
/// gossip key (mode 0600). Refuses to overwrite an existing CA. The
/// operator certificate is issued separately ([`issue_operator_cert`]).
pub fn init(dir: &Path, nodes: &[String], extra_sans: &[String]) -> Result<Vec<PathBuf>, NetError> {
    init_with(dir, nodes, extra_sans, KeyAlgorithm::default())
}

/// [`init`] with keys of `algorithm`.
pub fn init_with(
    dir: &Path,
    nodes: &[String],
    extra_sans: &[String],
    algorithm: KeyAlgorithm,
) -> Result<Vec<PathBuf>, NetError> {
    std::fs::create_dir_all(dir).map_err(|e| NetError::File { path: dir.into(), reason: e.to_string() })?;
    if dir.join("ca.key").exists() {
        return Err(NetError::CertGen(format!(
            "{} already holds a CA; remove it first or issue more certificates with `ringkv certs issue`",
            dir.display()
        )));
    }
    let mut written = Vec::new();
    let ca_key = algorithm.generate()?;
    let ca_cert = ca_params().self_signed(&ca_key).map_err(gen_err)?;
    write(dir.join("ca.crt"), &ca_cert.pem(), &mut written)?;
    write(dir.join("ca.key"), &ca_key.serialize_pem(), &mut written)?;
    restrict(&dir.join("ca.key"))?;
    let issuer = Issuer::new(ca_params(), ca_key);
    for name in nodes {
        check_node_name(name)?;
    }
    let usage = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    issue(
        dir,
        "node",
        "ringkv node",
        Names { sans: node_sans("node", extra_sans), uri: None },
        usage,
        &issuer,
        algorithm,
        &mut written,
    )?;
    restrict(&dir.join("node.key"))?;
    for name in nodes {
        issue_node(dir, name, extra_sans, &issuer, algorithm, &mut written)?;
    }
    let client_usage = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let names = Names { sans: vec![], uri: None };
    issue(dir, "client", "ringkv client", names, client_usage, &issuer, algorithm, &mut written)?;
    let keyring_path = dir.join(KEYRING_FILE);
    let keyring = Keyring::generate().map_err(|e| NetError::CertGen(e.to_string()))?;
    keyring.save(&keyring_path).map_err(|e| NetError::CertGen(e.to_string()))?;
    written.push(keyring_path);
    Ok(written)
}

fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, NetError> {
    let key_path = dir.join("ca.key");
    let pem = std::fs::read_to_string(&key_path)
        .map_err(|e| NetError::File { path: key_path.clone(), reason: e.to_string() })?;
    let ca_key =
        KeyPair::from_pem(&pem).map_err(|e| NetError::Certificate { path: key_path, reason: e.to_string() })?;
    Ok(Issuer::new(ca_params(), ca_key))
}

/// Issues one more node certificate from the CA in `dir`: `<name>.crt`
/// and `<name>.key`, naming node id `name` (`ringkv://node/<name>`).
pub fn issue_node_cert(dir: &Path, name: &str, extra_sans: &[String]) -> Result<Vec<PathBuf>, NetError> {
    check_node_name(name)?;
    let issuer = load_issuer(dir)?;
    let mut written = Vec::new();
    issue_node(dir, name, extra_sans, &issuer, KeyAlgorithm::default(), &mut written)?;
    Ok(written)
}

/// Issues the operator certificate from the CA in `dir`: `operator.crt` and
/// `operator.key` (mode 0600), naming `ringkv://operator/<name>`. Besides
/// what a client may do, it may make a node leave and, where enabled,
/// inject faults. Refuses to overwrite an existing one.
pub fn issue_operator_cert(dir: &Path, name: &str) -> Result<Vec<PathBuf>, NetError> {
    issue_operator_cert_with(dir, name, KeyAlgorithm::default())
}

/// [`issue_operator_cert`] with a key of `algorithm`.
pub fn issue_operator_cert_with(dir: &Path, name: &str, algorithm: KeyAlgorithm) -> Result<Vec<PathBuf>, NetError> {
    if !valid_name(name) {
        return Err(NetError::CertGen(format!("'{name}' is not a usable operator name (letters, digits, - _ .)")));
    }
    if dir.join("operator.crt").exists() {
        return Err(NetError::CertGen(format!(
            "{} already holds operator.crt; remove it (and operator.key) first",
            dir.display()
        )));
    }
    let issuer = load_issuer(dir)?;
    let mut written = Vec::new();
    let usage = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let names = Names { sans: vec![], uri: Some(format!("{OPERATOR_URI}{name}")) };
    issue(dir, "operator", &format!("ringkv operator {name}"), names, usage, &issuer, algorithm, &mut written)?;
    restrict(&dir.join("operator.key"))?;
    Ok(written)
}

fn check_node_name(name: &str) -> Result<(), NetError> {
    if !valid_name(name) {
        return Err(NetError::CertGen(format!("'{name}' is not a usable node name (letters, digits, - _ .)")));
    }
    if matches!(name, "node" | "client" | "operator" | "ca") {
        return Err(NetError::CertGen(format!("'{name}' is reserved for another file of the directory")));
    }
    Ok(())
}

fn issue_node(
    dir: &Path,
    name: &str,
    extra_sans: &[String],
    issuer: &Issuer<'_, KeyPair>,
    algorithm: KeyAlgorithm,
    written: &mut Vec<PathBuf>,
) -> Result<(), NetError> {
    let usage = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let names = Names { sans: node_sans(name, extra_sans), uri: Some(format!("{NODE_URI}{name}")) };
    issue(dir, name, &format!("ringkv node {name}"), names, usage, issuer, algorithm, written)?;
    restrict(&dir.join(format!("{name}.key")))
}

fn restrict(path: &Path) -> Result<(), NetError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| NetError::File { path: path.into(), reason: e.to_string() })?;
    }
    Ok(())
}
