//! Writes the seed corpus to `fuzz/corpus/<target>/seed-*`, replacing the
//! seeds written before (files libFuzzer added to the corpus are kept).

fn main() -> std::io::Result<()> {
    let corpus = ringkv_fuzz::fuzz_dir().join("corpus");
    for (target, _) in ringkv_fuzz::TARGETS {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seed-")) {
                std::fs::remove_file(path)?;
            }
        }
    }
    let seeds = ringkv_fuzz::seeds::seeds();
    for (target, name, bytes) in &seeds {
        std::fs::write(corpus.join(target).join(name), bytes)?;
    }
    println!("wrote {} seeds to {}", seeds.len(), corpus.display());
    Ok(())
}
