//! `musterctl completions SHELL`: the shell completion script, generated from the `Cli`
//! definition so it never falls behind the commands.

use clap::CommandFactory;
use clap_complete::Shell;

use super::Out;
use crate::Cli;

pub fn write(shell: Shell, out: Out<'_>) -> std::io::Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "musterctl", &mut script);
    out.write_all(&script)
}
