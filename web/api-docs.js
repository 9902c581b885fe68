// /api-docs: the OpenAPI document at /openapi.json, as a table and its schemas.

const $ = (id) => document.getElementById(id);

function cell(tag, text, className) {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

async function main() {
  const doc = await (await fetch("/openapi.json")).json();
  $("title").textContent = `${doc.info.title} ${doc.info.version}`;
  $("description").textContent = doc.info.description;
  const body = $("operations").querySelector("tbody");
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (method === "parameters") continue;
      const row = document.createElement("tr");
      row.dataset.operation = op.operationId;
      row.append(cell("td", method.toUpperCase(), "method"), cell("td", path), cell("td", op.summary));
      const answers = Object.entries(op.responses).map(([code, r]) => {
        const ref = r.content?.["application/json"]?.schema?.$ref;
        return `${code}${ref ? ` ${ref.split("/").at(-1)}` : ""}`;
      });
      row.append(cell("td", answers.join(", ")));
      body.append(row);
    }
  }
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    const details = document.createElement("details");
    details.id = `schema-${name}`;
    details.append(cell("summary", name), cell("pre", JSON.stringify(schema, null, 2)));
    $("schemas").append(details);
  }
  document.body.dataset.loaded = "true";
}

main();
