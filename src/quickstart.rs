pub fn run(_p: &std::path::Path) -> anyhow::Result<bool> { todo!() }
