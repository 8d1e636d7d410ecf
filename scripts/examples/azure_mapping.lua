-- Maps secret references under /collate/hybrid-ingestion/adls/ to Azure Key
-- Vault secrets named adls-<last path segment>, so that
-- secret:/collate/hybrid-ingestion/adls/accountKey reads adls-accountKey.
-- Other references and stores of other types keep the default mapping.

local ADLS_PREFIX = "/collate/hybrid-ingestion/adls/"

---@param ref hybrid.SecretRef
---@return string|nil
function map_secret(ref)
  if ref.kind ~= "azure" then
    return nil
  end
  -- A plain prefix comparison, because "-" is special in Lua patterns.
  if ref.path:sub(1, #ADLS_PREFIX) ~= ADLS_PREFIX then
    return nil
  end
  local name = ref.path:match("[^/]+$")
  -- A path that ends at the prefix has no segment to use as the name.
  if name == nil or #ref.path == #ADLS_PREFIX then
    return nil
  end
  return "adls-" .. name
end
