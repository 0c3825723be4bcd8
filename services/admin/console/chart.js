// A tiny line chart on a <canvas>: one line per series, own code (no library, no CDN).
"use strict";
const SipmeshChart = (() => {
  const COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c"];
  function draw(canvas, series, maxPoints) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 28;
    ctx.clearRect(0, 0, w, h);
    const names = Object.keys(series).sort();
    let max = 1;
    for (const n of names) for (const v of series[n]) max = Math.max(max, v);
    ctx.strokeStyle = "#ccd"; ctx.fillStyle = "#555"; ctx.font = "10px sans-serif";
    ctx.beginPath(); ctx.moveTo(pad, 4); ctx.lineTo(pad, h - pad); ctx.lineTo(w - 4, h - pad); ctx.stroke();
    ctx.fillText(max.toFixed(max < 10 ? 1 : 0), 2, 12);
    ctx.fillText("0", 2, h - pad);
    names.forEach((name, i) => {
      const values = series[name];
      ctx.strokeStyle = COLORS[i % COLORS.length];
      ctx.beginPath();
      values.forEach((v, j) => {
        const x = pad + (w - pad - 4) * (j / Math.max(1, maxPoints - 1));
        const y = h - pad - (h - pad - 6) * (v / max);
        if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
      ctx.fillStyle = COLORS[i % COLORS.length];
      ctx.fillText(name, pad + 4 + (i % 3) * 130, h - 14 + Math.floor(i / 3) * 10);
    });
  }
  return { draw };
})();
