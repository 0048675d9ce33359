"""The report's inline stylesheet."""

CSS = """
:root{--fg:#1d2329;--muted:#5f6b76;--line:#d9dee3;--bg:#ffffff;--soft:#f5f7f9;--bad:#fdecea;
--badfg:#a4262c;--good:#009E73;--accent:#C0392B}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1360px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 2px}h2{font-size:18px;margin:34px 0 10px;padding-bottom:4px;
border-bottom:1px solid var(--line)}h3{font-size:15px;margin:18px 0 6px}
.sub{color:var(--muted);margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px;margin:14px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 14px;background:var(--soft)}
.card .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600;margin-top:2px;overflow-wrap:anywhere}
.card .n{font-size:12px;color:var(--muted)}
.headline{font-size:15px;margin:6px 0 4px}
.warn{border-left:4px solid var(--accent);background:#fff6f4;padding:8px 14px;margin:12px 0;
border-radius:4px}.warn ul{margin:4px 0;padding-left:20px}
.scroll{overflow-x:auto;max-width:100%;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{padding:4px 7px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;vertical-align:bottom}
td.cfg{white-space:nowrap}.dot{display:inline-block;width:10px;height:10px;border-radius:2px;
margin-right:6px;vertical-align:-1px}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.num{white-space:nowrap}
tbody tr:nth-child(even){background:#fafbfc}
tr.failed,tr.failed:nth-child(even){background:var(--bad)}tr.failed td{color:var(--badfg)}
tr.failed td.err{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;
white-space:pre-wrap;overflow-wrap:anywhere}
tr.best td:first-child{font-weight:700}
.pareto-mark{color:var(--accent);margin-left:4px}
.int8{background:#009E73}.fp8{background:#CC79A7}.fp16{background:#3a93c8}.fp32{background:#c98a00}
.st-ok{color:var(--good)}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
figure{margin:8px 0 4px}figure img{max-width:100%;height:auto;display:block}
.wide img{max-width:none}figcaption{color:var(--muted);font-size:12.5px;margin-top:4px}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:6px 0}
dl.kv dt{color:var(--muted)}dl.kv dd{margin:0;overflow-wrap:anywhere}
details pre{background:var(--soft);padding:10px;border-radius:6px;overflow-x:auto;font-size:12px}
footer{margin-top:40px;color:var(--muted);font-size:12px}
"""
