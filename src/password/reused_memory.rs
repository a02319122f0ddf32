//! argon2 hashing and verifying on the calling thread's own working memory, kept from one
//! hash to the next: what `Argon2::hash_password` and `verify_password` compute, without
//! allocating the memory cost (19 MiB) anew each time. Run only on the hashing threads, so
//! the server holds at most one such block per thread, whatever the login rate.

use std::cell::RefCell;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use password_hash::{Output, ParamsString, PasswordHash, Salt};
use subtle::ConstantTimeEq;

thread_local! {
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// argon2 of `password` and `salt` into `out`, on this thread's memory.
fn compute(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    MEMORY.with_borrow_mut(|memory| {
        memory.resize(argon2.params().block_count(), Block::default());
        argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..])
    })
}

/// The bytes of working memory this thread keeps.
pub(super) fn held_bytes() -> usize {
    MEMORY.with_borrow(|memory| memory.capacity() * size_of::<Block>())
}

/// Frees this thread's working memory and has glibc's malloc give free memory back to
/// the system: a freed block of 19 MiB stays in the thread's arena otherwise (glibc
/// raises its mmap and trim thresholds after the first such block is freed).
pub(super) fn release() {
    drop(MEMORY.take());
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of malloc's own heaps to the kernel;
    // it touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A new PHC hash, as `Argon2::hash_password` makes it.
pub(super) fn hash<'a>(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: Salt<'a>,
) -> password_hash::Result<PasswordHash<'a>> {
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf)?;
    let len = argon2
        .params()
        .output_len()
        .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(len, |out| Ok(compute(argon2, password, salt_bytes, out)?))?;
    Ok(PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params())?,
        salt: Some(salt),
        hash: Some(output),
    })
}

/// Whether `password` matches a stored hash, with the stored hash's own algorithm,
/// version and parameters, as argon2's `verify_password` decides it (constant-time).
pub(super) fn verify(stored: &PasswordHash<'_>, password: &[u8]) -> bool {
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(stored.algorithm) else {
        return false;
    };
    let version = match stored.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(stored) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    compute(&argon2, password, salt_bytes, &mut out).is_ok()
        && bool::from(expected.as_bytes().ct_eq(&out))
}
