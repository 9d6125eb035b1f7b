//! Readable logs on stderr, once per process; the level comes from
//! `MESHCTL_LOG` (error, warn, info, debug, trace; default info).

use std::sync::Once;

use tracing::level_filters::LevelFilter;

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let level = std::env::var("MESHCTL_LOG")
            .ok()
            .and_then(|l| l.parse::<LevelFilter>().ok())
            .unwrap_or(LevelFilter::INFO);
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(false)
            .try_init();
    });
}
