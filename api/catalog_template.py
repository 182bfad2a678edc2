"""The Jinja2 template of the catalog page (``api.catalog``), with its small inline stylesheet.

Kept as a Python string rather than a ``.html`` file so that it ships with the package without
package-data rules.  Autoescaping is on: ``{{ value }}`` is always escaped.
"""

TEMPLATE = """<!doctype html>
<html lang="{{ lang }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ w.title }} · corridorhub</title>
<style>
  :root { --ink: #1d2733; --muted: #5b6675; --line: #d9dee5; --accent: #0b5cad; --bg: #f6f8fa; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.6 system-ui, "Hiragino Sans", "Noto Sans CJK JP", "IPAGothic", sans-serif;
         color: var(--ink); background: var(--bg); }
  header { background: #0d2b4e; color: #fff; padding: 1.5rem 1rem; }
  header .wrap, main { max-width: 64rem; margin: 0 auto; }
  header h1 { margin: 0 0 .25rem; font-size: 1.6rem; }
  header p { margin: .25rem 0; color: #d6e2f0; }
  header a { color: #fff; }
  nav.lang { float: right; font-size: .95rem; }
  main { padding: 1rem; }
  section.about, article.dataset, section.empty { background: #fff; border: 1px solid var(--line);
         border-radius: 8px; padding: 1rem 1.25rem; margin: 1rem 0; }
  h2 { font-size: 1.25rem; margin: 1.5rem 0 .5rem; }
  article h3 { margin: 0 0 .25rem; font-size: 1.2rem; }
  .id { font-family: ui-monospace, monospace; color: var(--muted); font-size: .9rem; }
  dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: .75rem 0; }
  dl.facts dt { color: var(--muted); }
  dl.facts dd { margin: 0; }
  table { border-collapse: collapse; width: 100%; font-size: .95rem; }
  th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line);
           vertical-align: top; }
  td.size { white-space: nowrap; color: var(--muted); }
  a { color: var(--accent); }
  code { background: var(--bg); padding: .1rem .3rem; border-radius: 4px; }
  details { margin-top: .5rem; }
  footer { max-width: 64rem; margin: 2rem auto; padding: 0 1rem; color: var(--muted); font-size: .9rem; }
</style>
</head>
<body>
<header>
  <div class="wrap">
    <nav class="lang">
      <a href="/?lang={{ other }}" hreflang="{{ other }}" lang="{{ other }}">{{ w.switch }}</a>
    </nav>
    <h1>{{ w.title }}</h1>
    <p>{{ w.lead }}</p>
  </div>
</header>
<main>
{% if publisher or licenses %}
  <section class="about">
  {% if publisher %}
    <p>{{ w.publisher }}:
    {% if publisher[2] %}<a href="{{ publisher[2] }}">{% endif %}
    {% if lang == "ja" %}{{ publisher[0] }} <span lang="en">({{ publisher[1] }})</span>
    {% else %}{{ publisher[1] }} <span lang="ja">({{ publisher[0] }})</span>{% endif %}
    {% if publisher[2] %}</a>{% endif %}
    </p>
  {% endif %}
  {% if licenses %}
    <p>{{ w.license }}:
    {% for url, id, title in licenses %}
      {% if loop.first %}<a class="license" href="{{ url }}">{{ title }}</a>
      {% elif lang == "ja" %}—
      <a class="license" href="{{ url }}">{{ title }} ({{ id }})</a> {{ w.compatible }}
      {% else %}— {{ w.compatible }} <a class="license" href="{{ url }}">{{ title }} ({{ id }})</a>
      {% endif %}
    {% endfor %}
    </p>
  {% endif %}
  </section>
{% endif %}

  <h2>{{ w.datasets }}</h2>
{% if not datasets %}
  <section class="empty">
    <p><strong>{{ w.empty }}</strong></p>
    <p>{{ w.empty_how }}</p>
    <p><code lang="en">corridorhub publish --all --from YYYY-MM-DD</code></p>
    <p><code lang="en">corridorhub demo</code></p>
  </section>
{% endif %}
{% for d in datasets %}
  <article class="dataset" id="{{ d.id }}">
    <h3>{{ d.title }}</h3>
    <div class="id" lang="en">{{ d.id }}</div>
    {% if d.description %}<p class="description">{{ d.description }}</p>{% endif %}
    {% if d.latest %}
    <dl class="facts">
      <dt>{{ w.latest }}</dt><dd><span class="version" lang="en">{{ d.latest.version }}</span>
        ({{ d.releases }})</dd>
      {% if d.latest.date_from %}
      <dt>{{ w.period }}</dt><dd>{{ d.latest.date_from }} – {{ d.latest.date_to }}</dd>
      {% endif %}
      {% if d.published_at %}<dt>{{ w.published }}</dt><dd>{{ d.published_at }}</dd>{% endif %}
      {% if d.latest.rows is not none %}
      <dt>{{ w.rows }}</dt><dd>{{ "{:,}".format(d.latest.rows) }}</dd>
      {% endif %}
      {% if d.privacy %}<dt>{{ w.privacy }}</dt><dd>{{ d.privacy }}</dd>{% endif %}
    </dl>
    <table class="downloads">
      <caption hidden>{{ w.downloads }}</caption>
      <thead><tr><th>{{ w.downloads }}</th><th>{{ w.file }}</th><th>{{ w.size }}</th></tr></thead>
      <tbody>
      {% for f in d.downloads %}
        <tr><td>{{ f.label }}</td>
            <td><a class="download" href="{{ f.url }}" download data-sha256="{{ f.sha256 }}"
                   lang="en">{{ f.name }}</a></td>
            <td class="size">{{ f.size }}</td></tr>
      {% endfor %}
        <tr><td>{{ w.manifest }}</td>
            <td><a class="manifest" href="{{ d.manifest_url }}" lang="en">manifest.json</a></td><td></td></tr>
      </tbody>
    </table>
    {% if d.earlier %}
    <details>
      <summary>{{ w.earlier }} ({{ d.earlier|length }})</summary>
      <ul>
      {% for version, url in d.earlier %}
        <li><a href="{{ url }}" lang="en">{{ version }}</a></li>
      {% endfor %}
      </ul>
    </details>
    {% endif %}
    {% endif %}
  </article>
{% endfor %}

  <h2>{{ w.api }}</h2>
  <p>{{ w.api_text }} <a href="/v1/datasets">/v1/datasets</a> · <a href="/docs">/docs</a></p>
</main>
<footer lang="en">corridorhub</footer>
</body>
</html>
"""
