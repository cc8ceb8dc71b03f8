# Calls nix/package.nix with a fake python3Packages whose buildPythonApplication returns
# its arguments, so a test can compare the declared Python dependencies with pyproject.toml.
# The fake set holds only the names the test passes in: a package.nix that reaches for
# anything else fails to evaluate.
{ libPath, namesJson }:

let
  lib = import libPath;
  fakePy = name: {
    pname = name;
    type = "derivation";
    outPath = "/nix/store/00000000000000000000000000000000-python3-${name}";
  };
  python3Packages = lib.genAttrs (builtins.fromJSON namesJson) fakePy // {
    python.sitePackages = "lib/python3.13/site-packages";
    buildPythonApplication = args: args;
  };
  args = import ../../nix/package.nix { inherit lib python3Packages; };
in
{
  inherit (args) pname version pyproject;
  dependencies = map (d: d.pname) args.dependencies;
  buildSystem = map (d: d.pname) args.build-system;
  optionalDependencies = lib.mapAttrs (_: map (d: d.pname)) args.optional-dependencies;
  mainProgram = args.meta.mainProgram;
  postInstall = args.postInstall;
}
