// Window presets. CT values are Hounsfield units, so the standard HU windows apply. A projection radiograph's values
// are detector units with no fixed scale: there each preset is a band of the image's own value range (1st to 99th
// percentile), placed where that tissue lies in display order (lung fields dark, mediastinum brighter, bone
// brightest; reversed for MONOCHROME1, where low values are white).
export const PRESETS = {
  lung: { label: "lung", hu: { center: -600, width: 1500 }, band: { center: 0.30, width: 0.55 } },
  mediastinum: { label: "mediastinum", hu: { center: 50, width: 350 }, band: { center: 0.65, width: 0.35 } },
  bone: { label: "bone", hu: { center: 400, width: 1800 }, band: { center: 0.82, width: 0.40 } },
};

function percentiles(values, qs) {
  const step = Math.max(1, Math.floor(values.length / 65536));  // a strided sample is plenty for 1 %/99 %
  const sample = [];
  for (let i = 0; i < values.length; i += step) sample.push(values[i]);
  sample.sort((a, b) => a - b);
  return qs.map((q) => sample[Math.min(sample.length - 1, Math.floor(q * (sample.length - 1)))]);
}

export function presetWindow(name, pixels) {
  const preset = PRESETS[name];
  if (pixels.meta.modality === "CT") return { ...preset.hu, label: preset.label + " (HU)" };
  const [lo, hi] = percentiles(pixels.values, [0.01, 0.99]);
  const span = Math.max(hi - lo, 1e-6);
  const c = pixels.meta.photometric === "MONOCHROME1" ? 1 - preset.band.center : preset.band.center;
  return { center: lo + c * span, width: preset.band.width * span, label: preset.label };
}
