// unbd: the operator's command line for volumes (on unbd-server) and ublk devices (on this node).
#include <cstdio>

#include "cli/commands.h"
#include "common/grpc_runtime.h"

int main(int argc, char** argv) {
  unbd::TuneGrpcRuntime();
  CLI::App app{"unbd: distributed network block device on Linux ublk"};
  app.require_subcommand(1);
  unbd::cli::RegisterVolumeCommands(app);
  unbd::cli::RegisterDeviceCommands(app);
  unbd::cli::RegisterRecoverCommand(app);
  unbd::cli::RegisterStatusCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const unbd::cli::Exit& e) {
    if (!e.message.empty()) std::fprintf(stderr, "unbd: %s\n", e.message.c_str());
    return e.code;
  }
  return 0;
}
