# peat-gateway as a Nix flake: the package, a NixOS module and a NixOS VM test.
#   nix build ./nix#peat-gateway
#   nix flake check ./nix            (runs the VM test; needs KVM)
# The repository's CI only parses these files (`nix-instantiate --parse`): nixpkgs cannot be
# fetched on its machines.
{
  description = "peat-gateway: durable change capture to enterprise sinks and formation authority beside a Peat mesh node";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "armv7l-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: rec {
        peat-gateway = pkgs.callPackage ./package.nix { };
        default = peat-gateway;
      });

      nixosModules.default = import ./module.nix;
      nixosModules.peat-gateway = self.nixosModules.default;

      overlays.default = final: prev: {
        peat-gateway = final.callPackage ./package.nix { };
      };

      checks = forAll (pkgs: {
        vm = import ./vm-test.nix {
          inherit pkgs;
          module = self.nixosModules.default;
          package = self.packages.${pkgs.system}.peat-gateway;
        };
      });
    };
}
