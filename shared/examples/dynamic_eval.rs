//! Evaluates dynamic (on-line) verification on an SVC2004 Task 2 or MCYT directory with the
//! writer-disjoint k-fold protocol of `autograph_shared::online::evaluation`.
//!
//! ```text
//! cargo run --release -p autograph-shared --example dynamic_eval -- <data dir>
//!     [--folds 5] [--references 5] [--random-per-writer 2] [--seed 17]
//!     [--candidates default|sweep] [--validation-only] [--timing-probes 200] [--json]
//! ```
//!
//! Progress goes to stderr; the table (or the JSON report) to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use autograph_shared::online::evaluation::{
    OnlineEvalOptions, default_candidates, evaluate_online, report_table, sweep_candidates,
};
use autograph_shared::online::list_online_dataset;

const USAGE: &str = "usage: dynamic_eval <data dir> [--folds N] [--references N] [--random-per-writer N] \
    [--seed N] [--candidates default|sweep] [--validation-only] [--timing-probes N] [--json]";

struct Args {
    data: PathBuf,
    options: OnlineEvalOptions,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut data = None;
    let mut options = OnlineEvalOptions::default();
    let mut json = false;
    let number = |flag: &str, value: Option<String>| -> Result<u64, String> {
        let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
        value.parse().map_err(|_| format!("{flag}: {value:?} is not a whole number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--folds" => options.folds = number(&arg, args.next())? as usize,
            "--references" => options.references = number(&arg, args.next())? as usize,
            "--random-per-writer" => options.random_per_writer = number(&arg, args.next())? as usize,
            "--seed" => options.seed = number(&arg, args.next())?,
            "--timing-probes" => options.timing_probes = number(&arg, args.next())? as usize,
            "--candidates" => {
                options.candidates = match args.next().as_deref() {
                    Some("default") => default_candidates(),
                    Some("sweep") => sweep_candidates(),
                    other => return Err(format!("--candidates: expected default or sweep, got {other:?}")),
                }
            }
            "--validation-only" => options.test = false,
            "--json" => json = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}\n{USAGE}")),
            path if data.is_none() => data = Some(PathBuf::from(path)),
            extra => return Err(format!("unexpected argument {extra:?}\n{USAGE}")),
        }
    }
    if !(2..=20).contains(&options.folds) {
        return Err(format!("--folds must be between 2 and 20, got {}", options.folds));
    }
    let data = data.ok_or_else(|| USAGE.to_string())?;
    Ok(Args { data, options, json })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let dataset = match list_online_dataset(&args.data) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match evaluate_online(&dataset, &args.options, &mut |line| eprintln!("{line}")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report_table(&report));
    }
    ExitCode::SUCCESS
}
