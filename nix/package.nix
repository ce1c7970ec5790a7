# The gateway binary with its default features (the TPM provider links tpm2-tss).
{ lib, rustPlatform, pkg-config, tpm2-tss }:

rustPlatform.buildRustPackage {
  pname = "peat-gateway";
  version = "0.1.0";

  src = lib.cleanSourceWith {
    src = ../.;
    # Only what the build reads: the crate, its build script and the embedded UI.
    filter = path: type:
      let rel = lib.removePrefix (toString ../. + "/") (toString path);
      in builtins.any (p: rel == p || lib.hasPrefix "${p}/" rel)
        [ "Cargo.toml" "Cargo.lock" "build.rs" "src" "ui" "tests" "examples" ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [ pkg-config ];
  buildInputs = [ tpm2-tss ];

  # The suite starts brokers, a TPM simulator and a browser; the repository's CI runs it.
  doCheck = false;

  env.PEAT_GATEWAY_BUILD_ID = "nix";

  meta = {
    description = "Durable change capture to enterprise sinks and formation authority beside a Peat mesh node";
    license = lib.licenses.asl20;
    mainProgram = "peat-gateway";
    platforms = lib.platforms.linux;
  };
}
