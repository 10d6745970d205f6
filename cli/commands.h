// The `unbd` command line is one CLI11 app; each family of subcommands registers itself here.
// A command's callback returns the process exit status through unbd::cli::Exit.
#pragma once

#include <CLI/CLI.hpp>

namespace unbd::cli {

// Thrown by command callbacks to end the program with `code` after printing `message` to stderr.
// CLI11 itself reports through exceptions, so the command line is the one place we use them.
struct Exit {
  int code;
  std::string message;
};

// `unbd volume create|list|stat|delete|resize ...` (backend/admin client).
void RegisterVolumeCommands(CLI::App& app);
// `unbd add|del|list|features ...` (frontend daemon and ublk control).
void RegisterDeviceCommands(CLI::App& app);
// `unbd recover -n ID | --all` (recover_command.cc).
void RegisterRecoverCommand(CLI::App& app);
// `unbd status [--json]`: devices, their daemons and their volumes' health (status_command.cc).
void RegisterStatusCommand(CLI::App& app);

}  // namespace unbd::cli
