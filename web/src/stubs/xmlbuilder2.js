// vtk.js's XML file reader/writer import xmlbuilder2 (a Node-oriented package needing "url" and "events"). The
// viewer never reads or writes VTK XML files, so the bundle gets this stand-in, which fails loudly if ever called.
export function create() {
  throw new Error("VTK XML input/output is not part of the radiolens viewer");
}
